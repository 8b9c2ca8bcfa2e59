//! Every binary ends a panic that escapes its error handling with one line on stderr naming
//! the model and node, and a non-zero exit (`suf_compiler::panic_guard`). The guard's
//! self-test variable makes each binary panic inside the guard at a named node.

use std::process::Command;

fn fixture() -> String {
    format!(
        "{}/tests/fixtures/bert_tiny_op14.onnx",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn check(bin: &str, args: &[&str], model: &str) {
    let out = Command::new(bin)
        .args(args)
        .env(
            suf_compiler::panic_guard::SELFTEST_ENV,
            "/encoder/layer.0/MatMul",
        )
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(suf_compiler::panic_guard::PANIC_EXIT),
        "{bin}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{bin}: {stderr}");
    for needle in [
        "internal error: panic in model",
        model,
        "node /encoder/layer.0/MatMul",
    ] {
        assert!(
            lines[0].contains(needle),
            "{bin}: {needle:?} missing in {}",
            lines[0]
        );
    }
}

#[test]
fn every_binary_turns_a_panic_into_one_line() {
    let model = fixture();
    check(
        env!("CARGO_BIN_EXE_suf-compile"),
        &[&model, "--n-bits", "37"],
        &model,
    );
    check(
        env!("CARGO_BIN_EXE_suf-bench"),
        &["--model", &model],
        &model,
    );
    check(
        env!("CARGO_BIN_EXE_suf-run"),
        &[
            "--config",
            "configs/smoke.json",
            "--out-json",
            "/tmp/never.json",
        ],
        "(config configs/smoke.json)",
    );
}
