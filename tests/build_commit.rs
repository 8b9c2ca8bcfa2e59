//! The commit in `--version` and in every report is the one the binary was built from, also
//! when the binary runs outside any git checkout (a copy of the tree on another machine, an
//! installed wheel). It used to be read from the working directory at run time: "unknown"
//! there, or another checkout's commit.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn version_names_the_build_commit_outside_any_checkout() {
    let Some(head) = git(&["rev-parse", "HEAD"]) else {
        eprintln!("not a git checkout: the stamp is `unknown` by design, nothing to compare");
        return;
    };
    let elsewhere = tempfile::tempdir().unwrap();
    for bin in [
        env!("CARGO_BIN_EXE_suf-run"),
        env!("CARGO_BIN_EXE_suf-bench"),
    ] {
        let out = Command::new(bin)
            .arg("--version")
            .current_dir(elsewhere.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{bin} --version failed");
        let text = String::from_utf8_lossy(&out.stdout);
        let stamp = text
            .split("(commit ")
            .nth(1)
            .and_then(|s| s.split(')').next())
            .unwrap_or_else(|| panic!("{bin} --version prints no commit: {text}"));
        assert!(
            stamp == head || stamp == format!("{head}-dirty"),
            "{bin} says it was built from {stamp}; the checkout is at {head}"
        );
    }
}

/// The dirty check must look at every crate the binaries are built from: `gpu/` (the CUDA
/// kernels and their Rust ops) was missing, so a binary built with edited kernels said it was
/// a clean build of the commit.
#[test]
fn the_dirty_check_covers_every_workspace_crate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let members_line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("the workspace lists its members");
    let members: Vec<&str> = members_line.split('"').skip(1).step_by(2).collect();
    assert!(members.len() >= 4, "parsed members {members:?}");
    let build = std::fs::read_to_string(root.join("runner/build.rs")).unwrap();
    let sources = build
        .split("const SOURCES")
        .nth(1)
        .and_then(|s| s.split("];").next())
        .expect("runner/build.rs lists SOURCES");
    let listed = |p: &str| sources.contains(&format!("\"{p}\""));
    for m in members {
        let covered =
            listed(m) || (listed(&format!("{m}/src")) && listed(&format!("{m}/Cargo.toml")));
        assert!(
            covered,
            "runner/build.rs's SOURCES misses the workspace crate {m}"
        );
    }
}
