//! Generates the Rust code and the reflection descriptor set from `proto/*.proto`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // JSON output of the CLI serialises the wire types directly.
        .type_attribute(".", "#[derive(serde::Serialize)]")
        // Ordered maps: a message encodes to the same bytes every time (export files).
        .btree_map(".")
        .file_descriptor_set_path(out_dir.join("collective_descriptor.bin"))
        .compile_protos(&["proto/collective.proto", "proto/raft.proto"], &["proto"])?;
    Ok(())
}
