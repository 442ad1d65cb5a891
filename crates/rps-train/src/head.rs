//! The new head phase 1 trains: drawn from `SEED` as `nn.Linear` draws one, on a
//! random stream of its own.

use anyhow::{Context, Result, bail};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rps_core::Tensors;
use rps_core::sidecar::HeadNames;

use crate::runner::Shapes;

/// The new head's own random stream of `SEED` ("head"), so that it does not depend
/// on anything else drawn.
const HEAD_STREAM: u64 = 0x6865_6164;

/// A fresh head, drawn as `nn.Linear` draws one: the head step's parameters `head`
/// names, a weight `[classes, features]` and a bias `[classes]`.
pub(crate) fn new_head(params: &Shapes, head: &HeadNames, seed: u64) -> Result<Tensors> {
    let shape = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, shape)| shape)
            .with_context(|| format!("the head step takes no {name}"))
    };
    let weight = shape(&head.weight)?;
    if weight.len() != 2 || shape(&head.bias)? != &[weight[0]] {
        bail!(
            "the head step's {} and {} do not make a Linear layer",
            head.weight,
            head.bias
        );
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ HEAD_STREAM);
    let (w, b) = rps_core::init::linear(weight[1], weight[0], &mut rng);
    Ok(Tensors::from([
        (head.weight.clone(), w),
        (head.bias.clone(), b),
    ]))
}
