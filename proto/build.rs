//! Compiles the `.proto` contract with protox (pure Rust, no `protoc` needed).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=ferry");
    let fds = protox::compile(["ferry/edge/v1/edge.proto"], ["."])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
