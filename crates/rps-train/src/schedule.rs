//! The learning rate (and Adam's beta1) of every step of a phase, as the libraries
//! people compare with compute them: fastai's `fit_one_cycle` (`combined_cos` over
//! `pct_train`, the share of the phase's steps done before the step) and PyTorch's
//! `CosineAnnealingLR` stepped once a batch.

use std::f64::consts::PI;

use rps_core::Schedule;

use crate::runner::StepRates;

/// fastai's `fit_one_cycle` defaults: the warm-up's share of the steps, the start's
/// and the end's division of the peak rate, and beta1 (fastai's momentum) at the
/// start, the peak and the end.
pub const ONE_CYCLE_PCT_START: f64 = 0.25;
pub const ONE_CYCLE_DIV: f64 = 25.0;
pub const ONE_CYCLE_DIV_FINAL: f64 = 1e5;
pub const ONE_CYCLE_MOMS: [f64; 3] = [0.95, 0.85, 0.95];

/// A phase's schedule: `schedule` from the peak rate `lr` over `steps` steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhaseSchedule {
    pub schedule: Schedule,
    pub lr: f64,
    pub steps: usize,
}

impl PhaseSchedule {
    /// The rates of step `step` (0 for the first) of the phase.
    pub fn at(&self, step: usize) -> StepRates {
        let pos = step as f64 / self.steps.max(1) as f64;
        let lr = self.lr;
        match self.schedule {
            Schedule::Constant => StepRates::constant(lr),
            Schedule::Cosine => StepRates::constant(lr * (1.0 + (PI * pos).cos()) / 2.0),
            Schedule::OneCycle => {
                let [start, middle, end] = ONE_CYCLE_MOMS;
                StepRates {
                    lr: combined_cos(pos, lr / ONE_CYCLE_DIV, lr, lr / ONE_CYCLE_DIV_FINAL),
                    beta1: combined_cos(pos, start, middle, end),
                }
            }
        }
    }
}

/// fastai's `combined_cos(pct_start, start, middle, end)` at `pos`: cosine from
/// `start` to `middle` over the first `pct_start` of the steps, then to `end`.
fn combined_cos(pos: f64, start: f64, middle: f64, end: f64) -> f64 {
    let split = ONE_CYCLE_PCT_START;
    if pos < split {
        cos_anneal(start, middle, pos / split)
    } else {
        cos_anneal(middle, end, (pos - split) / (1.0 - split))
    }
}

/// fastai's `SchedCos`: from `start` at 0 to `end` at 1 along half a cosine.
fn cos_anneal(start: f64, end: f64, pos: f64) -> f64 {
    start + (1.0 + (PI * (1.0 - pos)).cos()) * (end - start) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use rps_core::defaults;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1e-300)
    }

    #[test]
    fn one_cycle_follows_fastai_at_the_start_the_peak_and_the_end() {
        let s = PhaseSchedule {
            schedule: Schedule::OneCycle,
            lr: 1e-3,
            steps: 400,
        };
        // Step 0: lr_max / div, beta1 0.95.
        let first = s.at(0);
        assert!(
            close(first.lr, 1e-3 / 25.0) && close(first.beta1, 0.95),
            "{first:?}"
        );
        // Step 100 = pct_start x 400: the peak, and beta1 at its lowest.
        let peak = s.at(100);
        assert!(close(peak.lr, 1e-3) && close(peak.beta1, 0.85), "{peak:?}");
        // Halfway through the warm-up, halfway between (cosine's midpoint).
        let warm = s.at(50);
        assert!(close(warm.lr, (1e-3 / 25.0 + 1e-3) / 2.0), "{warm:?}");
        // The last step, 399: pos = 399/400 of the way; fastai's value there is
        // middle + (1 + cos(pi (1 - 299/300))) (end - middle) / 2.
        let last = s.at(399);
        let p = 299.0 / 300.0;
        let expected = 1e-3 + (1.0 + (PI * (1.0 - p)).cos()) * (1e-3 / 1e5 - 1e-3) / 2.0;
        assert!(close(last.lr, expected), "{last:?} vs {expected}");
        assert!(last.lr < 1e-3 / 1e4 && last.beta1 > 0.9499, "{last:?}");
        // The rate rises to the peak, then only falls.
        let lrs: Vec<f64> = (0..400).map(|i| s.at(i).lr).collect();
        assert!(lrs[..=100].windows(2).all(|w| w[0] < w[1]));
        assert!(lrs[100..].windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn cosine_falls_from_the_rate_as_pytorch_anneals_it_and_constant_stays() {
        let s = PhaseSchedule {
            schedule: Schedule::Cosine,
            lr: 0.1,
            steps: 10,
        };
        assert!(close(s.at(0).lr, 0.1));
        assert!(close(s.at(5).lr, 0.05));
        // CosineAnnealingLR(T_max=10, eta_min=0) after 9 steps.
        assert!(close(s.at(9).lr, 0.1 * (1.0 + (PI * 0.9).cos()) / 2.0));
        assert_eq!(s.at(3).beta1, defaults::ADAM_BETA1);
        let constant = PhaseSchedule {
            schedule: Schedule::Constant,
            ..s
        };
        assert_eq!(constant.at(7).lr, 0.1);
    }
}
