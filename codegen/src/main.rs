//! Writes `crates/rps-onnx/proto/onnx.rs`, the types prost generates from the
//! vendored `onnx.proto` (compiled by `protox`, so no `protoc` is needed), under a
//! first line naming the proto's SHA-256: rps-onnx's test compares it with the proto
//! beside it, so a proto changed without `make proto` fails `make test`.

use sha2::{Digest, Sha256};
use std::path::Path;

/// The generated file's first line up to the hash (rps-onnx's test reads it).
const HASH_LINE: &str = "// onnx.proto sha256: ";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/rps-onnx/proto");
    let proto = folder.join("onnx.proto");
    let hash = Sha256::digest(std::fs::read(&proto)?);
    let descriptors = protox::compile([&proto], [&folder])?;
    let out = std::env::temp_dir().join(format!("rps-codegen-{}", std::process::id()));
    std::fs::create_dir_all(&out)?;
    prost_build::Config::new()
        .out_dir(&out)
        .compile_fds(descriptors)?;
    let generated = std::fs::read_to_string(out.join("onnx.rs"))?;
    std::fs::remove_dir_all(&out)?;
    let target = folder.join("onnx.rs");
    std::fs::write(&target, format!("{HASH_LINE}{hash:x}\n{generated}"))?;
    println!("wrote {}", target.canonicalize()?.display());
    Ok(())
}
