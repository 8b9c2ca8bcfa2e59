//! One build serves both README commands (issue 15): `cargo run --release --bin suf-run`
//! (the default job) and `cargo test --release --workspace --all-targets` must ask for every
//! shared dependency with the same features, or resolver 2 compiles tract and its tree twice.

use std::process::Command;

fn tree(args: &[&str]) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .arg("tree")
        .args(args)
        .args(["-f", "{p} {f}", "--prefix", "none", "--locked", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches(" (*)").to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn default_job_and_tests_build_dependencies_with_the_same_features() {
    let run = tree(&["-p", "suf", "-e", "normal,build"]);
    let test = tree(&["--workspace", "-e", "normal,build,dev"]);
    let differ: Vec<&String> = run.iter().filter(|l| !test.contains(l)).collect();
    assert!(
        differ.is_empty(),
        "built with other features by the tests (pin them in Cargo.toml [dependencies]): {differ:#?}"
    );
}
