//! A researcher's first hour (issue 15): the READMEs' commands, as written, on a fresh clone
//! of this repository with `../shared` beside it. Every `cargo run --release --bin ...` line
//! of a README code block runs (with the already built binary in place of `cargo run`),
//! except blocks that say on their first line that they need something a clone lacks
//! (`# needs ...`). Afterwards the default job must have evaluated rows and the clone must
//! be as clean as it was cloned: every command writes under the ignored `out/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `git clone` of this repository's HEAD in a temp dir, `shared` linked beside it.
fn fresh_clone() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("suf");
    let out = Command::new("git")
        .args(["clone", "--quiet"])
        .arg(repo())
        .arg(&root)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git clone: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shared = repo().join("../shared").canonicalize().expect("../shared");
    std::os::unix::fs::symlink(shared, dir.path().join("shared")).unwrap();
    (dir, root)
}

/// The `cargo run --release --bin` commands of a Markdown file's code blocks, continuation
/// lines joined, skipping blocks whose first line starts with `# needs`.
fn readme_commands(markdown: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut skip_block = false;
    let mut first_line = false;
    let mut pending: Option<String> = None;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            skip_block = false;
            first_line = in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        if first_line && line.trim_start().starts_with("# needs") {
            skip_block = true;
        }
        first_line = false;
        if skip_block {
            continue;
        }
        let text = line.trim();
        let current = match pending.take() {
            Some(p) => format!("{p} {text}"),
            None if text.starts_with("cargo run --release --bin ") => text.to_string(),
            None => continue,
        };
        match current.strip_suffix('\\') {
            Some(head) => pending = Some(head.trim_end().to_string()),
            None => commands.push(current),
        }
    }
    commands
}

/// The command line with `cargo run --release --bin X --` replaced by the built binary.
fn with_binaries(command: &str) -> String {
    command
        .replace(
            "cargo run --release --bin suf-run --",
            env!("CARGO_BIN_EXE_suf-run"),
        )
        .replace(
            "cargo run --release --bin suf-compile --",
            env!("CARGO_BIN_EXE_suf-compile"),
        )
        .replace(
            "cargo run --release --bin suf-bench --",
            env!("CARGO_BIN_EXE_suf-bench"),
        )
}

fn sh(root: &Path, command: &str) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(with_binaries(command))
        .current_dir(root)
        .output()
        .unwrap()
}

fn git_status(root: &Path) -> String {
    let out = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=all"])
        .current_dir(root)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn readme_commands_parse_continuations_and_skip_marked_blocks() {
    let md = "x\n```sh\n# needs a GPU\ncargo run --release --bin suf-run -- a\n```\n\
              ```sh\ncargo run --release --bin suf-run -- b \\\n    --c d   # note\necho e\n```\n";
    assert_eq!(
        readme_commands(md),
        vec!["cargo run --release --bin suf-run -- b --c d   # note"]
    );
}

#[test]
fn every_readme_command_runs_as_written_on_a_fresh_clone() {
    let (_dir, root) = fresh_clone();
    assert_eq!(git_status(&root), "", "a fresh clone is clean");
    let mut ran = Vec::new();
    for readme in ["README.md", "runner/README.md"] {
        let text = std::fs::read_to_string(root.join(readme)).unwrap();
        for command in readme_commands(&text) {
            let out = sh(&root, &command);
            let stderr = String::from_utf8_lossy(&out.stderr);
            if command.contains("configs/accuracy_table4.json") {
                // No Table 4 checkpoint ships: every row is skipped, which is an error that
                // names each row's export command.
                assert!(!out.status.success(), "{command}: {stderr}");
                assert!(
                    stderr.contains("no example was evaluated")
                        && stderr.contains("python3 scripts/export_onnx.py --row bert-tiny-sst2"),
                    "{command}: {stderr}"
                );
            } else {
                assert!(out.status.success(), "{readme}: {command}\n{stderr}");
            }
            if ran.is_empty() {
                // The default job comes first and measures: nothing is there to reuse.
                assert!(
                    command.contains("configs/smoke.json") && !stderr.contains("already finished"),
                    "{command}: {stderr}"
                );
            }
            ran.push(command);
        }
    }
    assert!(
        ran.len() >= 8,
        "expected the READMEs' commands, found {ran:#?}"
    );
    // The default job evaluated real rows, into out/.
    let report: Value =
        serde_json::from_slice(&std::fs::read(root.join("out/smoke.json")).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert!(!rows.is_empty());
    for row in rows {
        assert_eq!(row["skipped"], false, "{row}");
        assert_eq!(row["examples"], row["val_size"], "{row}");
        assert!(row["suf"]["output"]["acc"].as_f64().is_some(), "{row}");
    }
    assert_eq!(
        git_status(&root),
        "",
        "the READMEs' commands left the clone dirty"
    );
}
