//! culex-core stays sans-IO: nothing in its normal dependency tree may do
//! I/O, spawn tasks or talk to Redis.

use std::process::Command;

/// Crates that bring a runtime, sockets or a Redis client.
const FORBIDDEN: &[&str] = &[
    "tokio",
    "async-std",
    "async-io",
    "async-net",
    "smol",
    "mio",
    "redis",
    "futures-io",
    "socket2",
    "polling",
    "hyper",
    "reqwest",
    "libc",
    "nix",
];

#[test]
fn core_dependency_tree_has_no_io_crates() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let output = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-p",
            "culex-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--manifest-path",
            manifest,
        ])
        .output()
        .expect("cargo tree runs");
    assert!(output.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&output.stderr));
    let tree = String::from_utf8_lossy(&output.stdout);
    let crates: Vec<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(crates.contains(&"culex-core"), "unexpected cargo tree output:\n{tree}");
    let found: Vec<&&str> = crates.iter().filter(|c| FORBIDDEN.contains(c)).collect();
    assert!(found.is_empty(), "culex-core depends on I/O crates {found:?}:\n{tree}");
}
