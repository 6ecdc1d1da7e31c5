//! Compiles the .proto files with protox (pure Rust), so building kiln needs
//! no protoc on the machine.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["kiln/v1/agent.proto", "kiln/v1/admin.proto"];
    println!("cargo:rerun-if-changed=kiln");
    let fds = protox::compile(protos, ["."])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
