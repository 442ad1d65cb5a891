//! Classification metrics from a confusion matrix.

/// `counts[true][pred]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Confusion {
    pub counts: Vec<Vec<usize>>,
}

/// Precision, recall and F1 of one class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

impl Confusion {
    pub fn new(classes: usize, truth: &[usize], predicted: &[usize]) -> Self {
        let mut counts = vec![vec![0; classes]; classes];
        for (&t, &p) in truth.iter().zip(predicted) {
            counts[t][p] += 1;
        }
        Self { counts }
    }

    pub fn total(&self) -> usize {
        self.counts.iter().flatten().sum()
    }

    pub fn accuracy(&self) -> f64 {
        let correct: usize = (0..self.counts.len()).map(|i| self.counts[i][i]).sum();
        ratio(correct, self.total())
    }

    /// Per class; a class never predicted (or never present) scores 0 there, as
    /// scikit-learn's `zero_division=0`.
    pub fn per_class(&self) -> Vec<ClassScores> {
        (0..self.counts.len())
            .map(|c| {
                let tp = self.counts[c][c];
                let predicted: usize = self.counts.iter().map(|row| row[c]).sum();
                let support: usize = self.counts[c].iter().sum();
                let precision = ratio(tp, predicted);
                let recall = ratio(tp, support);
                let f1 = if precision + recall > 0.0 {
                    2.0 * precision * recall / (precision + recall)
                } else {
                    0.0
                };
                ClassScores {
                    precision,
                    recall,
                    f1,
                    support,
                }
            })
            .collect()
    }

    /// Unweighted means of precision, recall and F1 over the classes.
    pub fn macro_average(&self) -> (f64, f64, f64) {
        let scores = self.per_class();
        let n = scores.len().max(1) as f64;
        (
            scores.iter().map(|s| s.precision).sum::<f64>() / n,
            scores.iter().map(|s| s.recall).sum::<f64>() / n,
            scores.iter().map(|s| s.f1).sum::<f64>() / n,
        )
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_a_hand_computed_matrix() {
        // true:  0 0 0 0 1 1 1 2 2 2
        // pred:  0 0 1 2 1 1 0 2 2 2
        let truth = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2];
        let pred = [0, 0, 1, 2, 1, 1, 0, 2, 2, 2];
        let m = Confusion::new(3, &truth, &pred);
        assert_eq!(m.counts, vec![vec![2, 1, 1], vec![1, 2, 0], vec![0, 0, 3]]);
        assert!((m.accuracy() - 0.7).abs() < 1e-12);
        let s = m.per_class();
        // class 0: tp 2, predicted 3, support 4
        assert!((s[0].precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((s[0].recall - 0.5).abs() < 1e-12);
        assert!((s[0].f1 - 4.0 / 7.0).abs() < 1e-12);
        // class 2: tp 3, predicted 4, support 3
        assert!((s[2].precision - 0.75).abs() < 1e-12 && s[2].recall == 1.0);
        let (p, r, _) = m.macro_average();
        assert!((p - (2.0 / 3.0 + 2.0 / 3.0 + 0.75) / 3.0).abs() < 1e-12);
        assert!((r - (0.5 + 2.0 / 3.0 + 1.0) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn a_class_never_predicted_scores_zero_not_nan() {
        let m = Confusion::new(2, &[0, 1], &[0, 0]);
        assert_eq!(m.per_class()[1].precision, 0.0);
        assert_eq!(m.per_class()[1].f1, 0.0);
    }
}
