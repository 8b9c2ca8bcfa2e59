//! Records the commit this binary is built from (`SUF_BUILD_COMMIT`), so a report names the
//! code that produced it, wherever the binary runs: a copy of the tree without `.git` (the GPU
//! machine), another checkout, an installed wheel. Reading the commit at run time from the
//! working directory named the wrong code in all three cases.
//!
//! The value is `<sha>`, `<sha>-dirty` when the sources that go into the binary differ from
//! that commit, or `unknown` outside git (then the report says so). A build from a tarball
//! can pass the commit in: `SUF_BUILD_COMMIT=<sha> cargo build ...`.

use std::path::Path;
use std::process::Command;

/// What the binary is compiled from; the dirty check looks at these paths only, so editing
/// docs or results does not mark a binary dirty.
const SOURCES: &[&str] = &[
    "Cargo.toml",
    "Cargo.lock",
    "src",
    "fixed",
    "compiler",
    "gpu/src",
    "gpu/Cargo.toml",
    "runner/src",
    "runner/build.rs",
    "runner/Cargo.toml",
];

fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=SUF_BUILD_COMMIT");
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest)
        .parent()
        .expect("runner/ sits in the workspace root")
        .to_path_buf();
    // Rebuild the stamp when the sources change (cargo scans directories recursively) or when
    // HEAD moves (a commit, a checkout). Not on `.git/index`: `git status` refreshes it, so
    // every build would rerun this script and recompile the crate.
    for s in SOURCES {
        println!("cargo:rerun-if-changed={}", root.join(s).display());
    }
    // Only files that exist: cargo treats a missing one as always stale (a fresh clone
    // has no packed-refs, a packed branch no loose ref file).
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watched.extend(git(&root, &["symbolic-ref", "-q", "HEAD"]));
    for p in watched {
        if let Some(path) = git(&root, &["rev-parse", "--git-path", &p]) {
            let path = root.join(path);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    let commit = match std::env::var("SUF_BUILD_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => match git(&root, &["rev-parse", "HEAD"]) {
            Some(sha) => {
                let mut args = vec!["status", "--porcelain", "--untracked-files=no", "--"];
                args.extend(SOURCES);
                match git(&root, &args) {
                    Some(changes) if changes.is_empty() => sha,
                    Some(_) => format!("{sha}-dirty"),
                    // A status that cannot be read is not a clean tree.
                    None => format!("{sha}-dirty"),
                }
            }
            None => "unknown".to_string(),
        },
    };
    println!("cargo:rustc-env=SUF_BUILD_COMMIT={commit}");
}
