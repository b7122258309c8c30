//! Compiles the etcd v3 wire API and corekv's internal messages with prost.
//! protox parses the .proto files in-process, so a fresh machine needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/kv.proto",
        "proto/auth.proto",
        "proto/rpc.proto",
        "proto/v3election.proto",
        "proto/v3lock.proto",
        "proto/health.proto",
        "proto/corekv.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    prost_build::Config::new().bytes(["."]).compile_fds(fds)?;
    Ok(())
}
