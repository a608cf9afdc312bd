//! The README's main command, `cargo run --release -p bench -- --spawn`,
//! names no binary. The package has two (`bench` and `dds-status`), so
//! cargo runs the one the manifest's `default-run` names, and refuses to
//! guess without it.

#[test]
fn cargo_run_without_a_binary_name_runs_the_bench() {
    let manifest: toml::Table =
        toml::from_str(include_str!("../Cargo.toml")).expect("bench/Cargo.toml parses");
    let package = manifest["package"].as_table().expect("[package]");
    let bins: Vec<&str> = manifest["bin"]
        .as_array()
        .expect("[[bin]] entries")
        .iter()
        .filter_map(|bin| bin.get("name").and_then(|n| n.as_str()))
        .collect();
    assert!(bins.contains(&"bench"), "binaries: {bins:?}");
    if bins.len() > 1 {
        assert_eq!(
            package.get("default-run").and_then(|v| v.as_str()),
            Some("bench"),
            "bench/Cargo.toml must say default-run = \"bench\" while it has several binaries: {bins:?}"
        );
    }
}
