//! Loads ONNX Runtime through the same code the binaries use.

use rps_core::{Device, DeviceChoice, SessionOptions};
use rps_runtime::Runtime;

#[test]
fn library_loads_and_reports_its_version() {
    let runtime = Runtime::get().expect("run `make setup` first");
    let version = runtime.version().expect("a versioned library file");
    println!(
        "ONNX Runtime {version} from {}",
        runtime.library().display()
    );
    let mut parts = version.split('.');
    assert_eq!(parts.next(), Some("1"), "unexpected version {version}");
    assert!(
        parts
            .next()
            .and_then(|m| m.parse::<u32>().ok())
            .is_some_and(|m| m >= 24)
    );
}

/// `DEVICE=cuda` runs on CUDA or is refused, naming why; `auto` takes CUDA exactly
/// when it runs. The CPU build from `make setup` (what CI installs) has no CUDA
/// provider at all, so it must refuse; the GPU build refuses only without a usable
/// GPU.
#[test]
fn cuda_runs_or_is_refused_and_auto_falls_back() {
    let runtime = Runtime::get().unwrap();
    let flavor = runtime.flavor();
    let choose = |device| runtime.session_builder(SessionOptions::new(device, 1));
    let cuda = choose(DeviceChoice::Cuda).map(|(_, device)| device);
    match (flavor.as_deref(), &cuda) {
        (Some("cpu"), Ok(_)) => panic!("the CPU build ran CUDA"),
        (_, Ok(device)) => assert_eq!(*device, Device::Cuda),
        (_, Err(err)) => assert!(
            err.to_string()
                .contains("CUDA was asked for but cannot run"),
            "{err}"
        ),
    }
    let expected = match cuda {
        Ok(_) => Device::Cuda,
        Err(_) => Device::Cpu,
    };
    let (_, device) = choose(DeviceChoice::Auto).unwrap();
    assert_eq!(device, expected, "flavor {flavor:?}");
}
