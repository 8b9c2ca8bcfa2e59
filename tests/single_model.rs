//! `suf-run --model ... --task ... --data ... --n-bits ...` (no config) evaluates exactly like
//! the configured row of the default job: same examples, same counts, same numbers.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn suf_run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_suf-run"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

/// The report's one row, wall-clock timings removed (they are the only numbers that differ).
fn row(path: &Path) -> Value {
    let r: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(r["rows"].as_array().unwrap().len(), 1, "{r}");
    let mut row = r["rows"][0].clone();
    let counts = row["counts"].as_object_mut().unwrap();
    counts.remove("float_runtime_s");
    for level in counts["suf"].as_object_mut().unwrap().values_mut() {
        level.as_object_mut().unwrap().remove("runtime_s");
    }
    row
}

#[test]
fn single_model_run_reproduces_the_configured_smoke_row() {
    let dir = tempfile::tempdir().unwrap();
    let (configured, single) = (dir.path().join("c.json"), dir.path().join("s.json"));
    let common = ["--max-examples", "48", "--emulation", "output,ring"];
    let out = suf_run(
        &[
            &[
                "--config",
                "configs/smoke.json",
                "--rows",
                "bert-tiny-substitute-sst2",
                "--out-json",
                configured.to_str().unwrap(),
            ][..],
            &common,
        ]
        .concat(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = suf_run(
        &[
            &[
                "--model",
                "models/bert-tiny-substitute-sst2.onnx",
                "--tokenizer",
                "models/bert-tiny-substitute-sst2.tokenizer.json",
                "--task",
                "glue/sst2",
                "--data",
                "../shared/data/glue-sst2/dev.tsv",
                "--n-bits",
                "37",
                "--out-json",
                single.to_str().unwrap(),
            ][..],
            &common,
        ]
        .concat(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("| SST-2 |"),
        "the table goes to stdout: {stdout}"
    );
    let (c, s) = (row(&configured), row(&single));
    assert_eq!(s["id"], "bert-tiny-substitute-sst2");
    assert_eq!(s["family"], "bert_seqcls", "family inferred from the task");
    assert_eq!(c["examples"], 48);
    for key in [
        "examples",
        "val_size",
        "n_bits",
        "frac_bits",
        "seq_len",
        "model_sha256",
        "counts",
        "delta_pp",
        "float_sigma_pp",
        "sigma_ref",
    ] {
        assert_eq!(c[key], s[key], "{key} differs");
    }
    assert_eq!(c["float"]["acc"], s["float"]["acc"]);
    for level in ["output", "ring"] {
        for key in ["acc", "agreement", "logit_abs_diff"] {
            assert_eq!(c["suf"][level][key], s["suf"][level][key], "{level}.{key}");
        }
    }
}

#[test]
fn single_model_run_names_what_it_lacks() {
    let out = suf_run(&[
        "--model",
        "models/bert-tiny-substitute-sst2.onnx",
        "--n-bits",
        "37",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--tokenizer, --task, --data") && err.trim_end().lines().count() == 1,
        "{err}"
    );
}
