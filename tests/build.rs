//! Compiles `proto/echo.proto` for the gRPC fixture with protox (a protobuf compiler in Rust),
//! so building the tests needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(feature = "fixtures")]
    {
        println!("cargo:rerun-if-changed=proto/echo.proto");
        let descriptors = protox::compile(["proto/echo.proto"], ["proto"])?;
        tonic_prost_build::configure().compile_fds(descriptors)?;
    }
    Ok(())
}
