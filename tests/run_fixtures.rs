//! `suf-run` end to end on the shipped exporter fixtures (tests/fixtures) and the real data in
//! ../shared: the smoke config as a user runs it, and one BERT and one GPT row with
//! `--max-examples 20`. Float graph only until the compiler library is wired in.

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

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn check_float_row(row: &Value, examples: u64) {
    assert_eq!(row["skipped"], false);
    assert_eq!(row["examples"], examples);
    let float = row["float"]["acc"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&float));
    let c = &row["counts"]["float"];
    assert_eq!(c["n"], examples);
    assert_eq!(float, c["correct"].as_f64().unwrap() / examples as f64);
}

#[test]
fn smoke_config_writes_both_reports() {
    let dir = tempfile::tempdir().unwrap();
    let (json, md) = (dir.path().join("s.json"), dir.path().join("s.md"));
    let out = suf_run(&[
        "--config",
        "configs/smoke.json",
        "--out-json",
        json.to_str().unwrap(),
        "--out-md",
        md.to_str().unwrap(),
        "--emulation",
        "none",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = read_json(&json);
    assert_eq!(r["meta"]["complete"], true);
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["val_size"], 872);
    assert_eq!(rows[1]["val_size"], 5153);
    for row in rows {
        check_float_row(row, 32);
    }
    let md = std::fs::read_to_string(&md).unwrap();
    assert!(
        md.contains("| BERT fixture (random weights) | SST-2 | 67k | 872 | 82.45 | 82.57 |"),
        "{md}"
    );
}

#[test]
fn one_bert_row_and_one_gpt_row_with_max_examples_20() {
    let dir = tempfile::tempdir().unwrap();
    for row in ["fixture-bert-tiny-sst2", "fixture-gpt2-lambada"] {
        let json = dir.path().join(format!("{row}.json"));
        let out = suf_run(&[
            "--config",
            "configs/smoke.json",
            "--rows",
            row,
            "--max-examples",
            "20",
            "--batch-size",
            "4",
            "--out-json",
            json.to_str().unwrap(),
            "--emulation",
            "none",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = read_json(&json);
        assert_eq!(r["rows"].as_array().unwrap().len(), 1);
        check_float_row(&r["rows"][0], 20);
    }
}
