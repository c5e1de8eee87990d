//! Generates the Rust code and the reflection descriptor set from `proto/*.proto`.
/// Messages with a secret field (see `proto/src/lib.rs`).
const SECRET_MESSAGES: [&str; 7] = [
    ".collective.v1.AddSiteRequest",
    ".collective.v1.CheckSiteRequest",
    ".collective.v1.ExportRequest",
    ".collective.v1.ImportHeader",
    ".collective.v1.LoginRequest",
    ".collective.v1.LoginResponse",
    ".collective.v1.LdapSettings",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // JSON output of the CLI serialises the wire types directly.
        .type_attribute(".", "#[derive(serde::Serialize)]")
        // Ordered maps: a message encodes to the same bytes every time (export files).
        .btree_map(".")
        // Messages carrying a password, passphrase or token: their `Debug` (proto/src/lib.rs)
        // redacts it, so no log line can show it.
        .skip_debug(SECRET_MESSAGES)
        .file_descriptor_set_path(out_dir.join("collective_descriptor.bin"))
        .compile_protos(&["proto/collective.proto", "proto/raft.proto"], &["proto"])?;
    Ok(())
}
