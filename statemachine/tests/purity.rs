//! Proves the state machine stays pure: no I/O, clock, randomness or runtime dependency, and no
//! hash-ordered maps whose iteration order could leak into results.

/// `collective-routing` is held to the same rules (its sources are scanned below too). `url` is a
/// parser only (alert webhooks are checked in the log like every other field). `foldhash` is a
/// hash function, used with its fixed seed (`sorted_map.rs`).
const ALLOWED_DEPENDENCIES: [&str; 7] =
    ["collective-routing", "compact_str", "foldhash", "serde", "serde_json", "thiserror", "url"];
/// The one file allowed a `HashMap`: `SortedMap` looks keys up through it and never walks it,
/// every iteration goes through its sorted key set.
const HASH_INDEX_FILE: &str = "sorted_map.rs";
const FORBIDDEN_IN_SOURCE: [&str; 10] = [
    "std::fs",
    "std::net",
    "std::time",
    "SystemTime",
    "Instant",
    "std::thread",
    "std::process",
    "HashMap",
    "HashSet",
    "rand::",
];

/// This crate's directory as `cargo test` gives it when the test runs. Not the compile-time
/// `env!`: CI runs in a fresh clone with a shared target directory, and a test binary cargo
/// reuses from a clone since deleted would look for its sources there.
fn crate_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}

#[test]
fn statemachine_depends_only_on_pure_crates() {
    let manifest = std::fs::read_to_string(format!("{}/Cargo.toml", crate_dir())).unwrap();
    let dependencies = manifest.split("[dependencies]").nth(1).unwrap().split("\n[").next().unwrap();
    for line in dependencies.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let name = line.split(['=', '.']).next().unwrap().trim();
        assert!(ALLOWED_DEPENDENCIES.contains(&name), "statemachine gained dependency {name:?}; it must stay pure");
    }
}

#[test]
fn statemachine_source_uses_no_clock_io_or_hash_order() {
    let mut dirs = vec![
        std::path::PathBuf::from(format!("{}/src", crate_dir())),
        std::path::PathBuf::from(format!("{}/../routing/src", crate_dir())),
    ];
    let mut scanned = 0;
    // Every source file, in subdirectories too (each concept's rules are `src/CONCEPT/rules.rs`).
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for forbidden in FORBIDDEN_IN_SOURCE {
                if forbidden == "HashMap" && path.ends_with(HASH_INDEX_FILE) {
                    // Walking the map is what would leak hash order: only its sorted keys are.
                    let walks = ["values.iter(", "values.values", "values.keys", "values.into_iter", "values.drain"];
                    for walk in walks {
                        assert!(!text.contains(walk), "{} walks its hash index ({walk})", path.display());
                    }
                    continue;
                }
                assert!(!text.contains(forbidden), "{} uses {forbidden}", path.display());
            }
            scanned += 1;
        }
    }
    assert!(scanned > 20, "only {scanned} source files found");
}
