//! The settings that tune training beyond the recipe's constants: a learning-rate
//! schedule per phase (`HEAD_SCHEDULE`, `FT_SCHEDULE`), the mode of the trained
//! stages' BatchNorm (`FT_BN`) and class weights in the loss (`CLASS_WEIGHTS`).
//! Their formulas are rps-train's and rps-export's; here are the values a person
//! writes, as flags and sidecars hold them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a phase's learning rate moves over its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// The same rate every step: the recipe.
    Constant,
    /// fastai's `fit_one_cycle`: warm-up, then cosine annealing, Adam's beta1 cycled.
    OneCycle,
    /// Cosine annealing from the rate to 0 (PyTorch's `CosineAnnealingLR` by step).
    Cosine,
}

impl Schedule {
    pub const ALL: [Schedule; 3] = [Schedule::Constant, Schedule::OneCycle, Schedule::Cosine];

    /// The setting's value: `constant`, `one-cycle` or `cosine`.
    pub fn name(self) -> &'static str {
        match self {
            Schedule::Constant => "constant",
            Schedule::OneCycle => "one-cycle",
            Schedule::Cosine => "cosine",
        }
    }

    pub fn parse(name: &str) -> Option<Schedule> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// A schedule flag's value, or the choices.
    pub fn flag(name: &str) -> Result<Schedule, String> {
        Self::parse(name).ok_or_else(|| {
            let choices = Self::ALL.map(Schedule::name).join(", ");
            format!("expected one of {choices}")
        })
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How phase 2 runs the BatchNorm layers of the stages it trains (`FT_BN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FtBn {
    /// Train mode, the recipe's (PyTorch's `model.train()`): each batch normalized
    /// with its own statistics, the running ones moved toward them.
    Train,
    /// Inference mode, as Keras recommends for fine-tuning (`training=False`): the
    /// running statistics normalize and stay as they are; scale and shift still learn.
    Eval,
}

impl FtBn {
    pub const ALL: [FtBn; 2] = [FtBn::Train, FtBn::Eval];

    /// The setting's value: `train` or `eval`.
    pub fn name(self) -> &'static str {
        match self {
            FtBn::Train => "train",
            FtBn::Eval => "eval",
        }
    }

    /// `--ft-bn`'s value, or the choices.
    pub fn flag(name: &str) -> Result<FtBn, String> {
        Self::ALL
            .into_iter()
            .find(|mode| mode.name() == name)
            .ok_or_else(|| format!("expected one of {}", Self::ALL.map(FtBn::name).join(", ")))
    }
}

impl fmt::Display for FtBn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Each class's weight in the training loss: PyTorch's
/// `CrossEntropyLoss(weight=...)`, the weighted mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum ClassWeights {
    /// Every class weighs 1: the plain mean (the recipe).
    None,
    /// scikit-learn's `balanced`: images / (classes x the class's images), from the
    /// training split.
    Balanced,
    /// One weight per class, in the order of `classes.txt`.
    List(Vec<f64>),
}

impl ClassWeights {
    /// The most a listed weight may be; more says a typo, not a weighting.
    pub const MAX: f64 = 1e6;

    /// `none`, `balanced`, or comma-separated weights, each above 0 and at most
    /// [`ClassWeights::MAX`], and a normal float32 (the graphs weigh in float32: a
    /// subnormal weight loses its digits, a smaller one becomes 0).
    pub fn flag(text: &str) -> Result<ClassWeights, String> {
        match text.trim() {
            "none" => return Ok(ClassWeights::None),
            "balanced" => return Ok(ClassWeights::Balanced),
            _ => {}
        }
        let expected = || {
            format!(
                "expected none, balanced, or a weight per class separated by commas (each at least {:e}, the smallest normal float32, and at most {})",
                f32::MIN_POSITIVE,
                Self::MAX
            )
        };
        let weights: Vec<f64> = text
            .split(',')
            .map(|w| w.trim().parse::<f64>().map_err(|_| expected()))
            .collect::<Result<_, _>>()?;
        let usable = |w: f64| w > 0.0 && w <= Self::MAX && (w as f32).is_normal();
        if !weights.iter().all(|&w| usable(w)) {
            return Err(expected());
        }
        Ok(ClassWeights::List(weights))
    }

    /// The weight of each class, given how many training images each has. A list of
    /// another length than the classes is refused, naming both.
    pub fn resolve(&self, images_per_class: &[usize]) -> Result<Vec<f64>, String> {
        let classes = images_per_class.len();
        match self {
            ClassWeights::None => Ok(vec![1.0; classes]),
            ClassWeights::Balanced => {
                let images: usize = images_per_class.iter().sum();
                Ok(images_per_class
                    .iter()
                    .map(|&n| images as f64 / (classes * n.max(1)) as f64)
                    .collect())
            }
            ClassWeights::List(weights) if weights.len() == classes => Ok(weights.clone()),
            ClassWeights::List(weights) => Err(format!(
                "{} weights for {classes} classes: give one per class, in the order of classes.txt",
                weights.len()
            )),
        }
    }
}

impl fmt::Display for ClassWeights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClassWeights::None => f.write_str("none"),
            ClassWeights::Balanced => f.write_str("balanced"),
            ClassWeights::List(weights) => {
                let text: Vec<String> = weights.iter().map(f64::to_string).collect();
                f.write_str(&text.join(","))
            }
        }
    }
}

impl From<ClassWeights> for String {
    fn from(weights: ClassWeights) -> String {
        weights.to_string()
    }
}

impl TryFrom<String> for ClassWeights {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        ClassWeights::flag(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_back_and_a_wrong_name_lists_the_choices() {
        for schedule in Schedule::ALL {
            assert_eq!(Schedule::parse(schedule.name()), Some(schedule));
        }
        let err = Schedule::flag("onecycle").unwrap_err();
        assert_eq!(err, "expected one of constant, one-cycle, cosine");
    }

    #[test]
    fn class_weights_parse_and_resolve_as_scikit_learn_balances() {
        assert_eq!(ClassWeights::flag("none"), Ok(ClassWeights::None));
        let list = ClassWeights::flag("1, 2.5,0.5").unwrap();
        assert_eq!(list, ClassWeights::List(vec![1.0, 2.5, 0.5]));
        assert_eq!(list.to_string(), "1,2.5,0.5");
        for bad in [
            "",
            "1,,2",
            "1,0",
            "-1,1",
            "1,nan",
            "1,inf",
            "2e6",
            "balance",
            // Subnormal or zero in float32, where the graphs weigh.
            "1e-45,1e-45,1e-45",
            "1e-46,1,1",
            "1e-50,1,1",
            "1e-39,1,1",
        ] {
            assert!(ClassWeights::flag(bad).is_err(), "{bad:?}");
        }
        assert!(ClassWeights::flag("1.2e-38,1,1").is_ok());
        // compute_class_weight("balanced", y) for counts 10, 30, 20: 60 / (3 n).
        let balanced = ClassWeights::Balanced.resolve(&[10, 30, 20]).unwrap();
        assert_eq!(balanced, [2.0, 60.0 / 90.0, 1.0]);
        assert_eq!(ClassWeights::None.resolve(&[4, 5]).unwrap(), [1.0, 1.0]);
        let err = list.resolve(&[1, 2]).unwrap_err();
        assert!(err.starts_with("3 weights for 2 classes"), "{err}");
        let json = serde_json::to_string(&list).unwrap();
        assert_eq!(json, "\"1,2.5,0.5\"");
        assert_eq!(serde_json::from_str::<ClassWeights>(&json).unwrap(), list);
    }
}
