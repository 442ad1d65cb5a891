//! Weight initialization shared by the stages that draw weights: a fresh
//! `nn.Linear`, as PyTorch initializes one.

use ndarray::{ArrayD, IxDyn};
use rand::Rng;
use rand_distr::{Distribution, Uniform};

/// `nn.Linear(inputs, outputs)`'s default draw: weight `[outputs, inputs]` and bias
/// `[outputs]`, both uniform in ±1/sqrt(inputs), weight first.
pub fn linear(inputs: usize, outputs: usize, rng: &mut impl Rng) -> (ArrayD<f32>, ArrayD<f32>) {
    let bound = 1.0 / (inputs as f32).sqrt();
    let uniform = Uniform::new_inclusive(-bound, bound).expect("finite bound");
    let mut draw = |shape: &[usize]| {
        let values = uniform
            .sample_iter(&mut *rng)
            .take(shape.iter().product())
            .collect();
        ArrayD::from_shape_vec(IxDyn(shape), values).expect("shape matches count")
    };
    let weight = draw(&[outputs, inputs]);
    let bias = draw(&[outputs]);
    (weight, bias)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn linear_draws_within_the_bound_and_is_seeded() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let (w, b) = linear(16, 3, &mut rng);
        assert_eq!((w.shape(), b.shape()), (&[3, 16][..], &[3][..]));
        assert!(w.iter().chain(&b).all(|v| v.abs() <= 0.25));
        let mut again = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        assert_eq!(linear(16, 3, &mut again).0, w);
    }
}
