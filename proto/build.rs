//! Compiles the .proto files with protox (pure Rust, no system protoc) and
//! generates prost messages and tonic services from the descriptor set.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "mamori/agent/v1/agent.proto",
        "mamori/agent/v1/events.proto",
        "mamori/policy/v1/policy.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // The descriptor set feeds gRPC reflection.
    std::fs::write(out.join("mamori_descriptor.bin"), fds.encode_to_vec())?;
    // The RPC is named `Connect`; the generated `connect` constructor of the
    // client would clash with it, so clients build a Channel themselves.
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
