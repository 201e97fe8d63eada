// Compiles proto/api.proto with protox (pure Rust), so no protoc is needed to build.
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/api.proto");
    let fds = protox::compile(["api.proto"], ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("kubelite_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .message_attribute(
            ".kubelite.v1",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(rename_all = \"camelCase\", default)]",
        )
        .enum_attribute(".kubelite.v1", "#[derive(serde::Serialize, serde::Deserialize)]")
        // Rarely set: boxed so a Pod stays small (clippy's large_enum_variant on Object).
        .boxed(".kubelite.v1.PodSpec.dns_config")
        .compile_fds(fds)?;
    Ok(())
}
