//! `suf-run` end to end on the shipped exporter fixtures (tests/fixtures) and the real data in
//! ../shared: the fixture config as a user runs it, and one BERT and one GPT row with
//! `--max-examples 20`, then every emulation level and the bitwidth search on the BERT row.

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
        "configs/fixtures.json",
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
        md.contains("| BERT fixture (random weights) | SST-2 | 67k | 32 (872) | 56.25 (tract float) | 82.45 | 82.57 |"),
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
            "configs/fixtures.json",
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

/// Every level runs through suf-run, and `--find-min-bits` reports a search whose trials
/// support its answer: the minimum is within the tolerance, every evaluated ring between it
/// and the prediction is too, and the next smaller evaluated ring is not (or cannot be built).
#[test]
fn every_level_and_the_bitwidth_search_on_the_bert_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let (json, md) = (dir.path().join("levels.json"), dir.path().join("levels.md"));
    let out = suf_run(&[
        "--config",
        "configs/fixtures.json",
        "--rows",
        "fixture-bert-tiny-sst2",
        "--max-examples",
        "16",
        "--emulation",
        "output,ring,sigma",
        "--find-min-bits",
        "--out-json",
        json.to_str().unwrap(),
        "--out-md",
        md.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = read_json(&json);
    let row = &r["rows"][0];
    check_float_row(row, 16);
    let float_acc = row["float"]["acc"].as_f64().unwrap();
    for level in ["output", "ring", "sigma"] {
        let suf = &row["suf"][level];
        let agreement = suf["agreement"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&agreement), "{level}: {suf}");
        let m = &row["min_bits"][level];
        let trials = m["trials"].as_array().unwrap();
        assert_eq!(
            trials[0]["n_bits"], 64,
            "{level}: the search starts with the n = 64 pass"
        );
        let predicted = m["predicted"].as_u64().unwrap();
        assert!((13..=65).contains(&predicted), "{level}: {m}");
        let at = |n: u64| trials.iter().find(|t| t["n_bits"].as_u64() == Some(n));
        for t in trials {
            let acc = t["acc"].as_f64().unwrap();
            let delta = t["delta_pp"].as_f64().unwrap();
            assert!(
                (delta - (acc - float_acc) * 100.0).abs() < 1e-9,
                "{level}: {t}"
            );
            assert_eq!(
                t["within"].as_bool().unwrap(),
                delta.abs() <= 0.1 + 1e-9,
                "{level}: {t}"
            );
        }
        // Held to float; when even n = 64 misses float, to the level's own n = 64 accuracy.
        let (min, key) = match m["min_bits"].as_u64() {
            Some(n) => (n, "within"),
            None => {
                assert_eq!(
                    trials[0]["within"], false,
                    "{level}: no minimum only when n = 64 misses float"
                );
                (m["min_bits_no_wrap"].as_u64().unwrap(), "within_no_wrap")
            }
        };
        assert_eq!(
            at(min).map(|t| t[key].clone()),
            Some(Value::Bool(true)),
            "{level}: {m}"
        );
        for n in min..=predicted.min(64) {
            if let Some(t) = at(n) {
                assert_eq!(
                    t[key], true,
                    "{level}: n = {n} between the minimum and the prediction: {m}"
                );
            }
        }
        let note = m["note"].as_str().unwrap();
        match at(min - 1) {
            Some(t) => assert_eq!(t[key], false, "{level}: {m}"),
            None => assert!(
                min == 13 || note.contains("cannot be built") || min > predicted,
                "{level}: {m}"
            ),
        }
    }
    let md = std::fs::read_to_string(&md).unwrap();
    assert!(md.contains("| Row | Examples | Float Acc | output Acc | ring Acc | sigma Acc | min n output | min n ring | min n sigma | Bitwidth (SIGMA) |"), "{md}");
}

/// Where a row's time and memory went (issue 13): per-phase seconds and the row's own peak
/// RSS in the report and in the row's log line, on a real decoder and encoder run.
#[test]
fn rows_report_phase_times_and_peak_rss() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("phases.json");
    let out = suf_run(&[
        "--config",
        "configs/fixtures.json",
        "--max-examples",
        "12",
        "--emulation",
        "output,ring",
        "--out-json",
        json.to_str().unwrap(),
    ]);
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{log}");
    let r = read_json(&json);
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let mut row_peaks = vec![];
    for row in rows {
        let id = row["id"].as_str().unwrap();
        let p = &row["phases"];
        let secs = |k: &str| {
            p[k].as_f64()
                .unwrap_or_else(|| panic!("{id}: phases.{k} missing: {p}"))
        };
        for k in [
            "prepare_s",
            "load_s",
            "compile_s",
            "optimise_s",
            "evaluate_s",
        ] {
            assert!(secs(k) > 0.0, "{id}: {k} = {}", secs(k));
        }
        let total = secs("total_s");
        assert_eq!(total, row["wall_s"].as_f64().unwrap());
        assert!(secs("evaluate_s") < total, "{id}: {p}");
        let parts: f64 = [
            "prepare_s",
            "load_s",
            "compile_s",
            "optimise_s",
            "evaluate_s",
        ]
        .iter()
        .map(|k| secs(k))
        .sum();
        assert!(
            parts <= total * 1.001 + 1e-3,
            "{id}: phases {parts} > total {total}"
        );
        // Per graph: the float graph has no SUF pass, each level has one.
        let graphs = p["graphs"].as_object().unwrap();
        assert_eq!(
            graphs.keys().collect::<Vec<_>>(),
            ["float", "output", "ring"],
            "{id}"
        );
        assert!(graphs["float"].get("compile_s").is_none(), "{id}");
        for level in ["output", "ring"] {
            assert!(graphs[level]["compile_s"].as_f64().unwrap() > 0.0, "{id}");
            assert!(graphs[level]["optimise_s"].as_f64().unwrap() > 0.0, "{id}");
        }
        let sum: f64 = graphs
            .values()
            .map(|g| g["optimise_s"].as_f64().unwrap())
            .sum();
        assert!((sum - secs("optimise_s")).abs() < 1e-9, "{id}: {p}");
        // Linux lets a process reset its own peak; where it cannot, null and a note.
        match row["peak_rss_mib"].as_f64() {
            Some(m) => {
                assert!(m > 1.0, "{id}: {m} MiB");
                row_peaks.push(m);
            }
            None => assert!(
                row["run_notes"]
                    .to_string()
                    .contains("peak RSS of the row not measured"),
                "{id}: {row}"
            ),
        }
        let line = log
            .lines()
            .find(|l| l.starts_with(&format!("row {id}: 12 of")))
            .unwrap_or_else(|| panic!("no row line for {id}: {log}"));
        for word in ["load", "compile", "optimise", "evaluate", "peak RSS"] {
            assert!(line.contains(word), "{line}");
        }
    }
    let process = r["meta"]["peak_rss_mib"].as_f64().unwrap();
    for m in row_peaks {
        assert!(m <= process, "a row's peak {m} above the run's {process}");
    }
}
