//! Generates the KEDA external scaler protocol's messages, server and
//! client from `proto/externalscaler.proto` with protox (a protobuf
//! compiler in Rust), so building needs no `protoc` binary.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/externalscaler.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        // The client is compiled too (a few hundred lines of generated
        // code): the tests speak the protocol with it.
        .build_client(true)
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
