mod common;
use common::{Input, session};
use ndarray::{ArrayD, IxDyn, arr0};
use rps_export::{names, resnet::Arch, train};
#[test]
fn speed() {
    let arch = Arch {
        width: 64,
        image_size: 224,
        classes: 3,
    };
    let mut s = session(&train::finetune_step(&arch), "ft");
    let n = 64;
    let mut inputs: Vec<(String, Input)> = vec![
        (
            names::FEATURES.into(),
            Input::F32(ArrayD::from_shape_fn(IxDyn(&[n, 256, 14, 14]), |i| {
                ((i[0] * 7 + i[1] * 3 + i[2] + i[3]) % 11) as f32 / 11.0
            })),
        ),
        (
            names::LABELS.into(),
            Input::I64(ArrayD::from_shape_fn(IxDyn(&[n]), |i| (i[0] % 3) as i64)),
        ),
        (
            names::DROPOUT_MASK.into(),
            Input::F32(ArrayD::ones(IxDyn(&[n, 512]))),
        ),
        (names::STEP.into(), Input::F32(arr0(1.0f32).into_dyn())),
        (names::LR.into(), Input::F32(arr0(1e-3f32).into_dyn())),
        (
            names::WEIGHT_DECAY.into(),
            Input::F32(arr0(0.0f32).into_dyn()),
        ),
    ];
    for (name, shape) in arch.finetune_params() {
        inputs.push((
            names::param(&name),
            Input::F32(ArrayD::from_elem(IxDyn(&shape), 0.01)),
        ));
        inputs.push((
            names::adam_m(&name),
            Input::F32(ArrayD::zeros(IxDyn(&shape))),
        ));
        inputs.push((
            names::adam_v(&name),
            Input::F32(ArrayD::zeros(IxDyn(&shape))),
        ));
    }
    for (name, shape) in arch.finetune_buffers() {
        inputs.push((
            names::buffer(&name),
            Input::F32(ArrayD::ones(IxDyn(&shape))),
        ));
    }
    let values: Vec<(String, ort::value::DynValue)> = inputs
        .into_iter()
        .map(|(k, v)| {
            (
                k,
                match v {
                    Input::F32(a) => ort::value::Tensor::from_array(a).unwrap().into_dyn(),
                    Input::I64(a) => ort::value::Tensor::from_array(a).unwrap().into_dyn(),
                },
            )
        })
        .collect();
    for i in 0..6 {
        let refs: Vec<(String, ort::session::SessionInputValue)> = values
            .iter()
            .map(|(k, v)| (k.clone(), v.view().into()))
            .collect();
        let t = std::time::Instant::now();
        let _ = s.run(refs).unwrap();
        println!(
            "step {i}: {:.1} ms, {:.1} img/s",
            t.elapsed().as_secs_f64() * 1e3,
            n as f64 / t.elapsed().as_secs_f64()
        );
    }
}
