//! The papercuts of issue 15, each as the user met it: a second compilation of suf's own
//! output, a lowered model used as a float baseline, an overridden `--rounding round`, output
//! paths found wrong only after the work, runs that evaluate nothing, `--help` without the
//! levels, string-typed JSON attributes, an exporter whose `--help` needs torch, and a
//! bitwidth search silent about its resolution.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

fn suf_compile(args: &[&str]) -> Output {
    run(env!("CARGO_BIN_EXE_suf-compile"), args)
}

fn suf_run(args: &[&str]) -> Output {
    run(env!("CARGO_BIN_EXE_suf-run"), args)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit 1 with one error line (progress lines may precede it) containing `needle`.
fn fails_with(o: &Output, needle: &str) -> String {
    let all = stderr(o);
    assert_eq!(o.status.code(), Some(1), "expected exit 1: {all}");
    let errors: Vec<&str> = all.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(errors.len(), 1, "one error line expected: {all}");
    assert!(errors[0].contains(needle), "error lacks {needle:?}: {all}");
    errors[0].to_string()
}

const BERT: &str = "tests/fixtures/bert_tiny_op17.onnx";

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn single_model_args<'a>(model: &'a str, out_json: &'a str) -> Vec<&'a str> {
    vec![
        "--model",
        model,
        "--tokenizer",
        "../shared/tokenizers/bert-base-uncased/tokenizer.json",
        "--task",
        "glue/sst2",
        "--data",
        "../shared/data/glue-sst2/dev.tsv",
        "--n-bits",
        "37",
        "--max-examples",
        "4",
        "--out-json",
        out_json,
    ]
}

#[test]
fn suf_output_is_refused_as_input_by_both_tools() {
    let d = tempfile::tempdir().unwrap();
    let once = d.path().join("once.onnx");
    let lowered = d.path().join("lowered.onnx");
    let o = suf_compile(&[BERT, "--n-bits", "37", "-o", p(&once)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let twice = d.path().join("twice.onnx");
    fails_with(
        &suf_compile(&[p(&once), "--n-bits", "37", "-o", p(&twice)]),
        "already rewritten by suf",
    );
    assert!(!twice.exists());
    let o = suf_compile(&[BERT, "--n-bits", "37", "--lower", "-o", p(&lowered)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json = d.path().join("r.json");
    for model in [&once, &lowered] {
        fails_with(
            &suf_run(&single_model_args(p(model), p(&json))),
            "already rewritten by suf",
        );
    }
}

#[test]
fn sigma_with_an_explicit_round_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("s.onnx");
    fails_with(
        &suf_compile(&[
            BERT,
            "--n-bits",
            "37",
            "--emulation",
            "sigma",
            "--rounding",
            "round",
            "-o",
            p(&out),
        ]),
        "--rounding round cannot be used with --emulation sigma",
    );
    assert!(!out.exists());
    let o = suf_compile(&[
        BERT,
        "--n-bits",
        "37",
        "--emulation",
        "sigma",
        "-o",
        p(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("rounding=trunc"));
}

#[test]
fn missing_output_directories_are_refused_up_front_by_both_tools() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("no-such-dir");
    let compiled = missing.join("m.onnx");
    fails_with(
        &suf_compile(&[BERT, "--n-bits", "37", "-o", p(&compiled)]),
        "does not exist",
    );
    let ok = d.path().join("ok.onnx");
    fails_with(
        &suf_compile(&[
            BERT,
            "--n-bits",
            "37",
            "-o",
            p(&ok),
            "--dump",
            p(&missing.join("d.txt")),
        ]),
        "does not exist",
    );
    assert!(!ok.exists(), "nothing is written when an output is wrong");
    let json = d.path().join("r.json");
    for (flag, path) in [
        ("--out-json", missing.join("r.json")),
        ("--out-md", missing.join("r.md")),
        ("--predictions-out", missing.join("p.jsonl")),
    ] {
        let mut args = vec![
            "--config",
            "configs/smoke.json",
            "--out-json",
            p(&json),
            "--max-examples",
            "4",
        ];
        if flag == "--out-json" {
            args[3] = p(&path);
        } else {
            args.extend([flag, p(&path)]);
        }
        let started = std::time::Instant::now();
        let err = fails_with(&suf_run(&args), "does not exist");
        assert!(err.contains(flag), "{err}");
        assert!(
            started.elapsed().as_secs() < 5,
            "refused before evaluating: {err}"
        );
    }
    assert!(!missing.exists(), "suf-run created the directory");
    assert!(!json.exists());
}

#[test]
fn a_run_that_evaluates_nothing_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let json = d.path().join("r.json");
    fails_with(
        &suf_run(&[
            "--config",
            "configs/smoke.json",
            "--max-examples",
            "0",
            "--out-json",
            p(&json),
        ]),
        "--max-examples must be at least 1",
    );
    let config = d.path().join("c.json");
    let cfg = serde_json::json!({
        "global": {"seed": 0, "seq_len": 128, "frac_bits": 12, "default_device": "cpu",
                   "on_missing_model": "skip"},
        "rows": [{"id": "absent", "family": "bert_seqcls", "task": "glue/sst2",
                  "model": "models/absent.onnx",
                  "tokenizer": "../shared/tokenizers/bert-base-uncased/tokenizer.json",
                  "data": "../shared/data/glue-sst2/dev.tsv", "n_bits": 37,
                  "sigma_ref": {"train_size": 67349, "val_size": 872, "pytorch_acc": 0.8245, "sigma_acc": 0.8257}}]
    });
    std::fs::write(&config, cfg.to_string()).unwrap();
    let err = fails_with(
        &suf_run(&["--config", p(&config), "--out-json", p(&json)]),
        "no example was evaluated",
    );
    assert!(
        err.contains("python3 scripts/export_onnx.py --hf HUB_ID_OR_DIR --family bert --out models/absent.onnx"),
        "the reason carries a runnable export command: {err}"
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(
        report["rows"][0]["skipped"], true,
        "the report is still written"
    );
}

#[test]
fn help_lists_the_emulation_levels() {
    for (bin, needle) in [
        (
            env!("CARGO_BIN_EXE_suf-compile"),
            "[possible values: output, ring, sigma]",
        ),
        (
            env!("CARGO_BIN_EXE_suf-run"),
            "[possible values: none, output, ring, sigma]",
        ),
    ] {
        let o = run(bin, &["--help"]);
        let help = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success() && help.contains(needle), "{bin}: {help}");
    }
    let o = suf_compile(&["--help"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("[possible values: round, trunc]"));
}

#[test]
fn json_dump_attributes_are_typed() {
    let d = tempfile::tempdir().unwrap();
    let (out, dump) = (d.path().join("m.onnx"), d.path().join("m.json"));
    let o = suf_compile(&[
        BERT,
        "--n-bits",
        "37",
        "-o",
        p(&out),
        "--dump",
        p(&dump),
        "--dump-format",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&std::fs::read(&dump).unwrap()).unwrap();
    let suf = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["suf"] == true)
        .unwrap();
    assert_eq!(suf["attributes"]["n_bits"], 37, "{suf}");
    assert_eq!(suf["attributes"]["frac_bits"], 12, "{suf}");
    assert_eq!(suf["attributes"]["rounding"], "round", "{suf}");
    let softmax = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["op"] == "Softmax")
        .unwrap();
    assert!(softmax["attributes"]["axis"].is_i64(), "{softmax}");
}

#[test]
fn export_script_help_needs_no_torch() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/export_onnx.py");
    // An interpreter that cannot import torch, whatever is installed: -S drops site-packages.
    let o = Command::new("python3")
        .args(["-S", script.to_str().unwrap(), "--help"])
        .output()
        .expect("python3 runs");
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        help.contains("--hf ID_OR_DIR") && help.contains("--family {bert,gpt}"),
        "{help}"
    );
}

#[test]
fn bitwidth_search_reports_its_resolution_and_agreement() {
    let d = tempfile::tempdir().unwrap();
    let (json, md) = (d.path().join("m.json"), d.path().join("m.md"));
    let o = suf_run(&[
        "--config",
        "configs/smoke.json",
        "--rows",
        "bert-tiny-substitute-sst2",
        "--max-examples",
        "16",
        "--find-min-bits",
        "--out-json",
        p(&json),
        "--out-md",
        p(&md),
    ]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("min-bits tolerance 0.1 pp; resolution 6.250 pp (one of 16 examples)")
            && err.contains("warning: the tolerance is below the resolution"),
        "{err}"
    );
    assert!(
        err.contains("n=64: acc") && err.contains("agreement"),
        "{err}"
    );
    let md = std::fs::read_to_string(&md).unwrap();
    assert!(
        md.contains("Resolution: one example = 6.250 pp (16 examples)"),
        "{md}"
    );
    assert!(
        md.contains("- bert-tiny-substitute-sst2 output: 64: "),
        "every searched ring with its agreement: {md}"
    );
}
