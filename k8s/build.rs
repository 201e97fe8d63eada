// With the `protobuf` feature: compiles the vendored Kubernetes .proto files (proto/,
// from kubernetes/api and kubernetes/apimachinery) with protox (pure Rust) into one
// descriptor set, which `protobuf.rs` decodes request bodies with.
fn main() {
    println!("cargo:rerun-if-changed=proto");
    #[cfg(feature = "protobuf")]
    {
        use prost::Message;
        let files = [
            "k8s.io/api/core/v1/generated.proto",
            "k8s.io/api/apps/v1/generated.proto",
            "k8s.io/api/autoscaling/v1/generated.proto",
        ];
        let fds =
            protox::compile(files, ["proto"]).expect("the vendored Kubernetes protos compile");
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
        std::fs::write(out.join("k8s_descriptor.bin"), fds.encode_to_vec())
            .expect("write descriptor");
    }
}
