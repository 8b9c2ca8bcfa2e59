//! suf-compile's command line: the happy path and every kind of bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn suf_compile(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_suf-compile"))
        .args(args)
        .output()
        .unwrap()
}

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_fails(o: &Output, needle: &str, out: &Path) {
    assert!(!o.status.success(), "expected failure, got success");
    let err = stderr(o);
    assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one-line error expected: {err}"
    );
    assert!(!out.exists(), "{} left behind", out.display());
}

#[test]
fn compiles_bert_fixture_with_dump_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.onnx");
    let dump = dir.path().join("x.txt");
    let o = suf_compile(&[
        &fixture("bert_tiny_op14.onnx"),
        "--n-bits",
        "37",
        "-o",
        out.to_str().unwrap(),
        "--dump",
        dump.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("inserted 48 SUF nodes"), "{stdout}");
    assert!(stdout.contains("attention-mask bias"), "{stdout}");
    let text = std::fs::read_to_string(&dump).unwrap();
    // A SUF line follows every MatMul/Gemm, Softmax, and every data Add.
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    for (i, l) in lines.iter().enumerate() {
        let op = l.split_whitespace().nth(1).unwrap_or("");
        if ["MatMul", "Gemm", "Softmax"].contains(&op) {
            assert!(lines[i + 1].starts_with("SUF"), "no SUF after: {l}");
        }
    }
    for format in ["dot", "json"] {
        let d = dir.path().join(format!("x.{format}"));
        let o = suf_compile(&[
            &fixture("gpt2_tiny_op17.onnx"),
            "--n-bits",
            "50",
            "-o",
            out.to_str().unwrap(),
            "--dump",
            d.to_str().unwrap(),
            "--dump-format",
            format,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let body = std::fs::read_to_string(&d).unwrap();
        match format {
            "dot" => assert!(body.starts_with("digraph") && body.contains("SufQuantize")),
            _ => {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["summary"]["inserted"]["gelu"], 2);
            }
        }
    }
}

#[test]
fn bad_inputs_give_one_line_errors_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let o_str = out.to_str().unwrap();
    let bert = fixture("bert_tiny_op17.onnx");

    let o = suf_compile(&["/nonexistent/model.onnx", "--n-bits", "37", "-o", o_str]);
    assert_fails(&o, "model file not found: /nonexistent/model.onnx", &out);

    let text = dir.path().join("notes.onnx");
    std::fs::write(&text, "this is not a protobuf, just some words\n").unwrap();
    let o = suf_compile(&[text.to_str().unwrap(), "--n-bits", "37", "-o", o_str]);
    assert_fails(&o, "ONNX model", &out);

    let bytes = std::fs::read(&bert).unwrap();
    let truncated = dir.path().join("truncated.onnx");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let o = suf_compile(&[truncated.to_str().unwrap(), "--n-bits", "37", "-o", o_str]);
    assert_fails(&o, "ONNX model", &out);

    for (n, f) in [("12", "12"), ("65", "12"), ("8", "12")] {
        let o = suf_compile(&[&bert, "--n-bits", n, "--frac-bits", f, "-o", o_str]);
        assert_fails(&o, &format!("n_bits = {n} is out of range"), &out);
    }

    // A graph with nothing to rewrite.
    let mut b = suf_compiler::builder::GraphBuilder::new("relu_only");
    b.input_f32("x", &[4]);
    b.node("Relu", &["x"], &["y"]);
    b.output("y");
    let relu = dir.path().join("relu.onnx");
    suf_compiler::save_model(&b.build(), &relu).unwrap();
    let o = suf_compile(&[relu.to_str().unwrap(), "--n-bits", "37", "-o", o_str]);
    assert_fails(&o, "no MatMul/Gemm", &out);

    let unwritable = dir.path().join("no-such-dir").join("out.onnx");
    let o = suf_compile(&[&bert, "--n-bits", "37", "-o", unwritable.to_str().unwrap()]);
    assert_fails(&o, "cannot write output", &unwritable);

    let o = suf_compile(&[&bert, "--n-bits", "60", "--lower", "-o", o_str]);
    assert_fails(&o, "exact only for n_bits <= 53", &out);
}
