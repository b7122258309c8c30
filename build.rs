//! Compiles the etcd v3 wire API and corekv's internal messages with prost.
//! protox parses the .proto files in-process, so a fresh machine needs no system protoc.
//! pbjson-build adds serde impls following the proto3 JSON mapping, as etcd's JSON gateway
//! (grpc-gateway's jsonpb with the original field names) reads and writes them.

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
    let descriptors = prost::Message::encode_to_vec(&fds);
    prost_build::Config::new().bytes(["."]).compile_fds(fds)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[
            ".etcdserverpb",
            ".mvccpb",
            ".authpb",
            ".v3lockpb",
            ".v3electionpb",
        ])?;
    Ok(())
}
