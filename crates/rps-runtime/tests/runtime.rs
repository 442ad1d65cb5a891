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

#[test]
fn cpu_library_refuses_cuda_and_auto_falls_back() {
    let runtime = Runtime::get().unwrap();
    if runtime.flavor().as_deref() != Some("cpu") {
        eprintln!("skipped: not the CPU build from `make setup`");
        return;
    }
    let err = runtime
        .session_builder(SessionOptions {
            device: DeviceChoice::Cuda,
            threads: 1,
        })
        .err()
        .expect("the CPU build has no CUDA provider");
    assert!(
        err.to_string()
            .contains("CUDA was asked for but cannot run"),
        "{err}"
    );
    let (_, device) = runtime
        .session_builder(SessionOptions {
            device: DeviceChoice::Auto,
            threads: 1,
        })
        .unwrap();
    assert_eq!(device, Device::Cpu);
}
