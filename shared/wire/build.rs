//! Compiles the cluster's protobuf service with a vendored `protoc`, so a fresh clone builds
//! without a system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: build scripts are single-threaded; nothing else reads the environment here.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    println!("cargo:rerun-if-changed=proto/cluster.proto");
    tonic_prost_build::compile_protos("proto/cluster.proto")?;
    Ok(())
}
