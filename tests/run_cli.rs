//! End-to-end tests of `suf-run` on small generated datasets and synthetic models (built in
//! the test, so they always exist): reports, error lines, sharding + merge, resume.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use suf_runner::synthetic;

const BERT_TOKENIZER: &str = "../shared/tokenizers/bert-base-uncased/tokenizer.json";
const GPT2_TOKENIZER: &str = "../shared/tokenizers/gpt2/tokenizer.json";

fn repo_path(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(rel)
        .display()
        .to_string()
}

/// A temp dir with a synthetic classifier + LM, an SST-2-format TSV and a LAMBADA jsonl.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(
            p.join("cls.onnx"),
            synthetic::to_bytes(&synthetic::bert_classifier(30522, 8, 7)),
        )
        .unwrap();
        std::fs::write(
            p.join("lm.onnx"),
            synthetic::to_bytes(&synthetic::causal_lm(50257, 4, 9)),
        )
        .unwrap();
        let words = [
            "good", "bad", "fine", "awful", "great", "boring", "fun", "dull",
        ];
        let mut tsv = String::from("sentence\tlabel\n");
        let mut jsonl = String::new();
        for i in 0..23 {
            let s = format!(
                "{} movie , {} plot {} ",
                words[i % 8],
                words[(i * 3) % 8],
                i
            );
            tsv.push_str(&format!("{s}\t{}\n", i % 2));
            jsonl.push_str(&format!("{}\n", serde_json::json!({"text": format!("the story of {s} ended with the word {}", words[(i * 5) % 8])})));
        }
        std::fs::write(p.join("sst2.tsv"), tsv).unwrap();
        std::fs::write(p.join("lambada.jsonl"), jsonl).unwrap();
        Setup { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn row(&self, id: &str, task: &str) -> Value {
        let (family, model, tokenizer, data, val) = if task == "lambada_openai" {
            ("gpt_lm", "lm.onnx", GPT2_TOKENIZER, "lambada.jsonl", 5153)
        } else {
            ("bert_seqcls", "cls.onnx", BERT_TOKENIZER, "sst2.tsv", 872)
        };
        serde_json::json!({
            "id": id, "family": family, "task": task,
            "model": self.path(model), "tokenizer": repo_path(tokenizer), "data": self.path(data),
            "n_bits": 37,
            "sigma_ref": {"train_size": null, "val_size": val, "pytorch_acc": 0.5, "sigma_acc": 0.5}
        })
    }

    fn write_config(&self, name: &str, rows: Vec<Value>) -> PathBuf {
        let cfg = serde_json::json!({
            "global": {"seed": 0, "seq_len": 32, "frac_bits": 12, "default_device": "cpu", "num_workers": 2, "batch_size": 4},
            "rows": rows
        });
        let p = self.path(name);
        std::fs::write(&p, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        p
    }

    fn default_config(&self) -> PathBuf {
        self.write_config(
            "cfg.json",
            vec![
                self.row("cls", "glue/sst2"),
                self.row("lm", "lambada_openai"),
            ],
        )
    }
}

fn suf_run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_suf-run"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The run's float-only arguments (the SUF path has its own tests once the compiler is in).
const FLOAT_ONLY: [&str; 2] = ["--emulation", "none"];

/// Every SUF level: shard/merge and resume must hold for the rewritten graphs too.
const SUF_LEVELS: [&str; 2] = ["--emulation", "output,ring,sigma"];

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// Asserts a failed run printed exactly one line on stderr containing every `needle`.
fn assert_one_line_error(out: &Output, needles: &[&str]) {
    assert!(!out.status.success(), "expected failure");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "error line lacks {n:?}: {}", lines[0]);
    }
}

#[test]
fn run_writes_reports_with_counts_and_sizes() {
    let setup = Setup::new();
    let cfg = setup.default_config();
    let (json, md, preds) = (
        setup.path("r.json"),
        setup.path("r.md"),
        setup.path("p.jsonl"),
    );
    let out = suf_run(&[
        "--config",
        s(&cfg),
        "--out-json",
        s(&json),
        "--out-md",
        s(&md),
        "--predictions-out",
        s(&preds),
        "--max-examples",
        "20",
        FLOAT_ONLY[0],
        FLOAT_ONLY[1],
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = read_json(&json);
    assert_eq!(r["meta"]["complete"], true);
    for key in [
        "tool_version",
        "git_commit",
        "config_sha256",
        "machine",
        "started",
        "finished",
    ] {
        assert!(r["meta"][key].is_string(), "meta.{key} missing");
    }
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row["val_size"], 23);
        assert_eq!(row["examples"], 20);
        let acc = row["float"]["acc"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc));
        assert_eq!(row["counts"]["float"]["n"], 20);
        assert_eq!(row["model_sha256"].as_str().unwrap().len(), 64);
    }
    assert!(rows[1]["float"]["word_acc"].is_number());
    let md_text = std::fs::read_to_string(&md).unwrap();
    assert!(md_text.contains("| Model | Dataset | Train Size | Val Size | Float Acc | SIGMA PyTorch Acc | SIGMA Acc | SUF output | SUF sigma | min n | Bitwidth | frac_bits | Notes |"), "{md_text}");
    // 20 of the 23 examples ran; the float column says which engine measured it.
    assert!(md_text.contains("| 20 (23) |"), "{md_text}");
    assert!(md_text.contains("(tract float)"), "{md_text}");
    // Predictions agree with the counted accuracy.
    let lines: Vec<Value> = std::fs::read_to_string(&preds)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 40);
    let correct = lines
        .iter()
        .filter(|p| p["row"] == "cls" && p["float"] == p["label"])
        .count();
    assert_eq!(
        correct as u64,
        rows[0]["counts"]["float"]["correct"].as_u64().unwrap()
    );
}

#[test]
fn bad_config_is_one_line_naming_row_and_key() {
    let setup = Setup::new();
    let mut row = setup.row("cls", "glue/sst2");
    row["n_bit"] = 3.into();
    let cfg = setup.write_config("bad.json", vec![row]);
    let out = suf_run(&["--config", s(&cfg), "--out-json", s(&setup.path("o.json"))]);
    assert_one_line_error(&out, &["row \"cls\"", "n_bit"]);
    assert!(
        !setup.path("o.json").exists(),
        "no report on a config error"
    );
}

#[test]
fn unknown_task_is_one_line() {
    let setup = Setup::new();
    let mut row = setup.row("cls", "glue/sst2");
    row["task"] = "glue/cola".into();
    let cfg = setup.write_config("bad.json", vec![row]);
    let out = suf_run(&["--config", s(&cfg), "--out-json", s(&setup.path("o.json"))]);
    assert_one_line_error(&out, &["row \"cls\"", "glue/cola"]);
}

#[test]
fn missing_data_is_one_line() {
    let setup = Setup::new();
    let mut row = setup.row("cls", "glue/sst2");
    row["data"] = setup.path("nope.tsv").display().to_string().into();
    let cfg = setup.write_config("c.json", vec![row]);
    let out = suf_run(&[
        "--config",
        s(&cfg),
        "--out-json",
        s(&setup.path("o.json")),
        FLOAT_ONLY[0],
        FLOAT_ONLY[1],
    ]);
    assert_one_line_error(&out, &["row \"cls\"", "data file not found", "nope.tsv"]);
}

#[test]
fn corrupt_row_is_one_line_naming_file_and_line() {
    let setup = Setup::new();
    std::fs::write(
        setup.path("bad.tsv"),
        "sentence\tlabel\nfine\t1\nno tab here\n",
    )
    .unwrap();
    let mut row = setup.row("cls", "glue/sst2");
    row["data"] = setup.path("bad.tsv").display().to_string().into();
    let cfg = setup.write_config("c.json", vec![row]);
    let out = suf_run(&[
        "--config",
        s(&cfg),
        "--out-json",
        s(&setup.path("o.json")),
        FLOAT_ONLY[0],
        FLOAT_ONLY[1],
    ]);
    assert_one_line_error(&out, &["bad.tsv:3", "corrupt row"]);
}

#[test]
fn an_unknown_device_is_one_line() {
    let setup = Setup::new();
    let cfg = setup.default_config();
    let out = suf_run(&[
        "--config",
        s(&cfg),
        "--out-json",
        s(&setup.path("o.json")),
        "--device",
        "tpu",
    ]);
    assert_one_line_error(&out, &["device \"tpu\"", "cpu or cuda"]);
}

/// CI machines have no GPU: `--device cuda` must say so in one line, before any work, and
/// leave no report behind.
#[test]
fn cuda_without_a_gpu_is_one_line() {
    if std::path::Path::new("/dev/nvidia0").exists() {
        eprintln!("skipped: this machine has an NVIDIA GPU");
        return;
    }
    let setup = Setup::new();
    let cfg = setup.default_config();
    let report = setup.path("o.json");
    let out = suf_run(&[
        "--config",
        s(&cfg),
        "--out-json",
        s(&report),
        "--device",
        "cuda",
    ]);
    assert_one_line_error(&out, &["--device cuda", "no usable NVIDIA GPU"]);
    assert!(!report.exists());
}

#[test]
fn missing_model_skips_the_row_unless_named() {
    let setup = Setup::new();
    let mut missing = setup.row("gone", "glue/sst2");
    missing["model"] = setup.path("gone.onnx").display().to_string().into();
    missing["export_hint"] = "run scripts/export_onnx.py for gone".into();
    let cfg = setup.write_config("c.json", vec![setup.row("cls", "glue/sst2"), missing]);
    let json = setup.path("o.json");
    let out = suf_run(&[
        "--config",
        s(&cfg),
        "--out-json",
        s(&json),
        "--max-examples",
        "4",
        FLOAT_ONLY[0],
        FLOAT_ONLY[1],
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = read_json(&json);
    assert_eq!(r["rows"][1]["skipped"], true);
    let reason = r["rows"][1]["skip_reason"].as_str().unwrap();
    assert!(
        reason.contains("model file not found") && reason.contains("export_onnx.py"),
        "{reason}"
    );
    let out = suf_run(&[
        "--config",
        s(&cfg),
        "--out-json",
        s(&setup.path("o2.json")),
        "--rows",
        "gone",
    ]);
    assert_one_line_error(&out, &["row \"gone\"", "model file not found"]);
}

/// Everything but timings and run metadata.
fn numbers(report: &Value) -> Value {
    let mut rows = report["rows"].clone();
    for row in rows.as_array_mut().unwrap() {
        let o = row.as_object_mut().unwrap();
        o.remove("wall_s");
        o.remove("phases");
        o.remove("peak_rss_mib");
        o["float"].as_object_mut().unwrap().remove("runtime_s");
        o["counts"]
            .as_object_mut()
            .unwrap()
            .remove("float_runtime_s");
        for (_, level) in o["suf"].as_object_mut().unwrap() {
            level.as_object_mut().unwrap().remove("runtime_s");
        }
        for (_, level) in o["counts"]["suf"].as_object_mut().unwrap() {
            level.as_object_mut().unwrap().remove("runtime_s");
        }
    }
    rows
}

#[test]
fn merged_shards_equal_a_single_run() {
    let setup = Setup::new();
    let cfg = setup.default_config();
    let single = setup.path("single.json");
    let out = suf_run(&[
        "--config",
        s(&cfg),
        "--out-json",
        s(&single),
        SUF_LEVELS[0],
        SUF_LEVELS[1],
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut shards = Vec::new();
    for k in 0..3 {
        let p = setup.path(&format!("shard{k}.json"));
        let out = suf_run(&[
            "--config",
            s(&cfg),
            "--out-json",
            s(&p),
            "--shard",
            &format!("{k}/3"),
            SUF_LEVELS[0],
            SUF_LEVELS[1],
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        shards.push(p);
    }
    let merged = setup.path("merged.json");
    let mut args = vec![
        "merge".to_string(),
        "--out-json".into(),
        s(&merged).into(),
        "--out-md".into(),
        s(&setup.path("m.md")).into(),
    ];
    // Shard order on the command line must not matter.
    args.extend(shards.iter().rev().map(|p| s(p).to_string()));
    let out = Command::new(env!("CARGO_BIN_EXE_suf-run"))
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (a, b) = (read_json(&single), read_json(&merged));
    let shard0 = read_json(&shards[0]);
    assert_ne!(
        numbers(&shard0),
        numbers(&a),
        "a shard alone must differ from the whole"
    );
    assert_eq!(numbers(&a), numbers(&b));
    assert_eq!(b["rows"][0]["examples"], 23);
    // Times add over shards; the peak RSS is the largest shard's.
    for (i, row) in b["rows"].as_array().unwrap().iter().enumerate() {
        let parts: Vec<Value> = shards
            .iter()
            .map(|p| read_json(p)["rows"][i].clone())
            .collect();
        let sum = |f: &dyn Fn(&Value) -> f64| parts.iter().map(f).sum::<f64>();
        let total = sum(&|r| r["phases"]["total_s"].as_f64().unwrap());
        assert!((row["phases"]["total_s"].as_f64().unwrap() - total).abs() < 1e-9);
        let optimise = sum(&|r| {
            r["phases"]["graphs"]["ring"]["optimise_s"]
                .as_f64()
                .unwrap()
        });
        assert!(
            (row["phases"]["graphs"]["ring"]["optimise_s"]
                .as_f64()
                .unwrap()
                - optimise)
                .abs()
                < 1e-9
        );
        let peaks: Vec<Option<f64>> = parts.iter().map(|r| r["peak_rss_mib"].as_f64()).collect();
        let expected = peaks.iter().try_fold(0f64, |m, p| p.map(|p| m.max(p)));
        assert_eq!(row["peak_rss_mib"].as_f64(), expected, "{peaks:?}");
    }
    for level in ["output", "ring", "sigma"] {
        assert!(
            b["rows"][0]["suf"][level]["acc"].is_number(),
            "{level}: {b}"
        );
    }
    // A missing shard is refused.
    let out = suf_run(&[
        "merge",
        "--out-json",
        s(&setup.path("x.json")),
        s(&shards[0]),
        s(&shards[1]),
    ]);
    assert_one_line_error(&out, &["shard"]);
}

#[test]
fn restart_with_the_same_output_skips_finished_rows() {
    let setup = Setup::new();
    let cfg = setup.default_config();
    let json = setup.path("r.json");
    let args = [
        "--config",
        s(&cfg),
        "--out-json",
        s(&json),
        "--max-examples",
        "8",
        SUF_LEVELS[0],
        SUF_LEVELS[1],
    ];
    // First run does only the first row (as if interrupted after it).
    let mut first: Vec<&str> = args.to_vec();
    first.extend(["--rows", "cls"]);
    assert!(suf_run(&first).status.success());
    let before = read_json(&json);
    assert_eq!(before["rows"].as_array().unwrap().len(), 1);
    let out = suf_run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("row cls: already finished"), "{stderr}");
    assert!(!stderr.contains("row lm: already finished"), "{stderr}");
    let after = read_json(&json);
    assert_eq!(after["rows"].as_array().unwrap().len(), 2);
    assert_eq!(
        after["rows"][0], before["rows"][0],
        "the finished row is reused verbatim"
    );
    // Changing an option that affects results re-evaluates.
    let out = suf_run(&[
        "--config",
        s(&cfg),
        "--out-json",
        s(&json),
        "--max-examples",
        "6",
        SUF_LEVELS[0],
        SUF_LEVELS[1],
    ]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("already finished"));
    assert_eq!(read_json(&json)["rows"][0]["examples"], 6);
}

#[test]
fn strict_sigma_match_fails_after_writing_the_report() {
    let setup = Setup::new();
    let mut row = setup.row("cls", "glue/sst2");
    row["sigma_ref"]["pytorch_acc"] = 0.999.into();
    let cfg = setup.write_config("c.json", vec![row]);
    let json = setup.path("o.json");
    let args = [
        "--config",
        s(&cfg),
        "--out-json",
        s(&json),
        "--max-examples",
        "8",
        FLOAT_ONLY[0],
        FLOAT_ONLY[1],
    ];
    assert!(
        suf_run(&args).status.success(),
        "without the flag a mismatch is only reported"
    );
    let mut strict = args.to_vec();
    strict.push("--strict-sigma-match");
    let out = suf_run(&strict);
    assert!(!out.status.success());
    // Row progress lines come first; the error is the single last line.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("suf-run: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert_eq!(stderr.lines().last(), Some(errors[0]));
    assert!(
        errors[0].contains("--strict-sigma-match") && errors[0].contains("cls (-"),
        "{stderr}"
    );
    assert_eq!(read_json(&json)["meta"]["complete"], true);
}

#[test]
fn tokenizer_outside_the_model_vocabulary_is_one_line() {
    let setup = Setup::new();
    std::fs::write(
        setup.path("small.onnx"),
        synthetic::to_bytes(&synthetic::causal_lm(1000, 4, 3)),
    )
    .unwrap();
    let mut row = setup.row("lm", "lambada_openai");
    row["model"] = setup.path("small.onnx").display().to_string().into();
    let cfg = setup.write_config("c.json", vec![row]);
    let out = suf_run(&[
        "--config",
        s(&cfg),
        "--out-json",
        s(&setup.path("o.json")),
        FLOAT_ONLY[0],
        FLOAT_ONLY[1],
    ]);
    assert_one_line_error(
        &out,
        &[
            "row \"lm\"",
            "vocabulary of 1000",
            "tokenizer does not belong",
        ],
    );
}

/// A decoder whose `logits` is not a projection's output cannot have its logits computed
/// only where read: one error line naming the node, never a silent fallback; with
/// `--full-logits` the same row runs.
#[test]
fn logits_not_made_by_a_projection_are_an_error_unless_full_logits() {
    let setup = Setup::new();
    let mut lm = synthetic::causal_lm(50257, 4, 9);
    let graph = lm.graph.as_mut().unwrap();
    let head = graph.node.last_mut().unwrap();
    head.output[0] = "pre_logits".into();
    let mut tanh = head.clone();
    tanh.op_type = "Tanh".into();
    tanh.name = "final_tanh".into();
    tanh.input = vec!["pre_logits".into()];
    tanh.output = vec!["logits".into()];
    graph.node.push(tanh);
    std::fs::write(setup.path("tanh.onnx"), synthetic::to_bytes(&lm)).unwrap();
    let mut row = setup.row("lm", "lambada_openai");
    row["model"] = setup.path("tanh.onnx").display().to_string().into();
    let cfg = setup.write_config("c.json", vec![row]);
    let out = suf_run(&[
        "--config",
        s(&cfg),
        "--out-json",
        s(&setup.path("o.json")),
        FLOAT_ONLY[0],
        FLOAT_ONLY[1],
    ]);
    assert_one_line_error(&out, &["row \"lm\"", "Tanh `final_tanh`", "--full-logits"]);
    let out = suf_run(&[
        "--config",
        s(&cfg),
        "--out-json",
        s(&setup.path("o.json")),
        "--full-logits",
        SUF_LEVELS[0],
        SUF_LEVELS[1],
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read_json(&setup.path("o.json"))["rows"][0]["examples"], 23);
}

#[test]
fn find_min_bits_refuses_shards_and_float_only_runs() {
    let setup = Setup::new();
    let cfg = setup.default_config();
    let json = setup.path("r.json");
    let out = suf_run(&[
        "--config",
        s(&cfg),
        "--out-json",
        s(&json),
        "--find-min-bits",
        "--shard",
        "0/2",
    ]);
    assert_one_line_error(&out, &["--find-min-bits", "--shard"]);
    let out = suf_run(&[
        "--config",
        s(&cfg),
        "--out-json",
        s(&json),
        "--find-min-bits",
        "--emulation",
        "none",
    ]);
    assert_one_line_error(&out, &["--find-min-bits", "emulation level"]);
    assert!(!json.exists(), "no report is written for a refused run");
}

/// A ring too small for the products (n = 20: products at scale 2f wrap from 2^-5 on) is
/// flagged by `suf-run diagnose`, node by node, in all three outputs; n = 50 flags nothing.
#[test]
fn diagnose_flags_the_ring_products_that_wrap_at_n20() {
    let setup = Setup::new();
    let cfg = setup.default_config();
    let diagnose = |n_bits: &str| {
        let (json, md, svg) = (
            setup.path(&format!("d{n_bits}.json")),
            setup.path(&format!("d{n_bits}.md")),
            setup.path(&format!("d{n_bits}.svg")),
        );
        let out = suf_run(&[
            "diagnose",
            "--config",
            s(&cfg),
            "--row",
            "cls",
            "--emulation",
            "ring",
            "--n-bits",
            n_bits,
            "--examples",
            "3",
            "--out-json",
            s(&json),
            "--out-md",
            s(&md),
            "--out-svg",
            s(&svg),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let svg = std::fs::read_to_string(&svg).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        (read_json(&json), std::fs::read_to_string(&md).unwrap(), svg)
    };
    let (small, md, svg) = diagnose("20");
    let nodes = small["nodes"].as_array().unwrap();
    let ring: Vec<&Value> = nodes
        .iter()
        .filter(|n| n["op"] == "SufRingMatMul")
        .collect();
    assert_eq!(ring.len(), 2, "the classifier's two products: {nodes:?}");
    // The first product (the hidden layer) wraps; what follows sees garbage of any size.
    assert!(ring[0]["overflows_2f"].as_u64().unwrap() > 0, "{}", ring[0]);
    assert!(
        ring[0]["headroom_2f_bits"].as_f64().unwrap() < 0.0,
        "{}",
        ring[0]
    );
    let flagged = small["flagged"].as_array().unwrap();
    for n in nodes {
        let wrapped =
            n["overflows"].as_u64().unwrap_or(0) + n["overflows_2f"].as_u64().unwrap_or(0) > 0;
        let name = n["node"].as_str().unwrap();
        assert_eq!(flagged.iter().any(|f| f == name), wrapped, "{n}");
        assert!(md.contains(name));
    }
    // The count in the Markdown and the red rings in the SVG are the flagged nodes (the
    // word "overflowed" alone is in every file: the SVG's legend has it).
    assert!(!flagged.is_empty());
    assert!(
        md.contains(&format!("**{} node(s) overflowed:**", flagged.len())),
        "{md}"
    );
    assert_eq!(
        svg.matches("stroke=\"red\" stroke-width=\"1.5\"").count(),
        flagged.len(),
        "{svg}"
    );
    // A node without statistics says so instead of reporting 0 overflows.
    let unrecorded = small["unrecorded"].as_array().expect("unrecorded list");
    for n in nodes {
        let listed = unrecorded.iter().any(|u| u == &n["node"]);
        assert_eq!(n["recorded"] == false, listed, "{n}");
        assert_eq!(n["overflows"].is_null(), listed, "{n}");
    }
    let (wide, md, svg) = diagnose("50");
    assert_eq!(
        svg.matches("stroke=\"red\" stroke-width=\"1.5\"").count(),
        0
    );
    assert_eq!(wide["flagged"].as_array().unwrap().len(), 0, "{wide}");
    assert!(md.contains("No node overflowed"));
    for n in wide["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["op"] == "SufRingMatMul")
    {
        assert_eq!(n["overflows_2f"], 0);
        assert!(n["headroom_2f_bits"].as_f64().unwrap() > 0.0, "{n}");
    }
}

/// `args` as the run of `bin` (another copy of suf-run) would get them.
fn run_with(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

fn assert_ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

/// Moves every float initializer of `model` into `<file>.data` beside it (ONNX external data).
fn write_with_external_data(model: &suf_compiler::ModelProto, path: &Path) {
    use prost::Message;
    use tract_onnx::pb::{tensor_proto::DataLocation, StringStringEntryProto};
    let mut m = model.clone();
    let data_name = format!("{}.data", path.file_name().unwrap().to_str().unwrap());
    let mut blob: Vec<u8> = Vec::new();
    for t in &mut m.graph.as_mut().unwrap().initializer {
        if t.data_type != 1 || t.float_data.is_empty() {
            continue;
        }
        let bytes: Vec<u8> = t.float_data.iter().flat_map(|v| v.to_le_bytes()).collect();
        t.float_data.clear();
        let entry = |k: &str, v: String| StringStringEntryProto {
            key: k.into(),
            value: v,
        };
        t.external_data = vec![
            entry("location", data_name.clone()),
            entry("offset", blob.len().to_string()),
            entry("length", bytes.len().to_string()),
        ];
        t.data_location = Some(DataLocation::External as i32);
        blob.extend(bytes);
    }
    assert!(!blob.is_empty());
    std::fs::write(path.with_file_name(&data_name), blob).unwrap();
    std::fs::write(path, m.encode_to_vec()).unwrap();
}

/// A re-export with other weights changes only the external-data file: the finished row
/// must not come back as the new model's result.
#[test]
fn resume_reevaluates_when_only_the_external_data_changed() {
    let setup = Setup::new();
    let model = setup.path("ext.onnx");
    write_with_external_data(&synthetic::bert_classifier(30522, 8, 7), &model);
    let mut row = setup.row("ext", "glue/sst2");
    row["model"] = s(&model).into();
    let cfg = setup.write_config("c.json", vec![row]);
    let json = setup.path("r.json");
    let args = [
        "--config",
        s(&cfg),
        "--out-json",
        s(&json),
        "--max-examples",
        "6",
        FLOAT_ONLY[0],
        FLOAT_ONLY[1],
    ];
    assert_ok(&suf_run(&args));
    let first = read_json(&json);
    assert_eq!(
        first["rows"][0]["external_data_sha256"]
            .as_object()
            .unwrap()
            .len(),
        1
    );
    let again = assert_ok(&suf_run(&args));
    assert!(again.contains("row ext: already finished"), "{again}");
    // Same .onnx bytes, other weights.
    let onnx_before = std::fs::read(&model).unwrap();
    write_with_external_data(&synthetic::bert_classifier(30522, 8, 8), &model);
    assert_eq!(
        std::fs::read(&model).unwrap(),
        onnx_before,
        "only the .data file may differ"
    );
    let after = assert_ok(&suf_run(&args));
    assert!(!after.contains("already finished"), "{after}");
    assert_ne!(
        read_json(&json)["rows"][0]["external_data_sha256"],
        first["rows"][0]["external_data_sha256"]
    );
}

/// Another binary (a bug fix, another checkout) with the same version number: its results
/// are its own, never the old binary's reused.
#[test]
fn resume_reevaluates_with_another_binary() {
    let setup = Setup::new();
    let cfg = setup.default_config();
    let json = setup.path("r.json");
    let args = [
        "--config",
        s(&cfg),
        "--out-json",
        s(&json),
        "--max-examples",
        "4",
        "--rows",
        "cls",
        FLOAT_ONLY[0],
        FLOAT_ONLY[1],
    ];
    assert_ok(&suf_run(&args));
    // The same program with one byte more: a different binary of the same version.
    let other = setup.path("suf-run-other");
    let mut bytes = std::fs::read(env!("CARGO_BIN_EXE_suf-run")).unwrap();
    bytes.push(0);
    std::fs::write(&other, bytes).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o755)).unwrap();
    let stderr = assert_ok(&run_with(&other, &args));
    assert!(!stderr.contains("already finished"), "{stderr}");
    let r = read_json(&json);
    assert_ne!(r["meta"]["binary_sha256"], Value::Null);
}

#[test]
fn merge_refuses_shards_of_different_commits_or_binaries() {
    let setup = Setup::new();
    let cfg = setup.default_config();
    let mut shards = Vec::new();
    for k in 0..2 {
        let p = setup.path(&format!("shard{k}.json"));
        assert_ok(&suf_run(&[
            "--config",
            s(&cfg),
            "--out-json",
            s(&p),
            "--shard",
            &format!("{k}/2"),
            "--max-examples",
            "6",
            FLOAT_ONLY[0],
            FLOAT_ONLY[1],
        ]));
        shards.push(p);
    }
    let merge = || {
        suf_run(&[
            "merge",
            "--out-json",
            s(&setup.path("m.json")),
            s(&shards[0]),
            s(&shards[1]),
        ])
    };
    assert_ok(&merge());
    let original = std::fs::read(&shards[1]).unwrap();
    let mut edited = read_json(&shards[1]);
    edited["meta"]["git_commit"] = "0123456789abcdef0123456789abcdef01234567".into();
    std::fs::write(&shards[1], serde_json::to_vec(&edited).unwrap()).unwrap();
    assert_one_line_error(&merge(), &["git commit", "0123456789ab"]);
    let mut edited: Value = serde_json::from_slice(&original).unwrap();
    edited["meta"]["binary_sha256"] = "f".repeat(64).into();
    std::fs::write(&shards[1], serde_json::to_vec(&edited).unwrap()).unwrap();
    assert_one_line_error(&merge(), &["binary", "ffffffffffff"]);
}

/// `--cache-dir` keeps compiled graphs: a second run loads them; a changed model, level or
/// n is another entry, so a stale graph is never used.
#[test]
fn cache_dir_reuses_compiled_graphs_and_never_a_stale_one() {
    let setup = Setup::new();
    let cfg = setup.default_config();
    let cache = setup.path("cache");
    let run = |out: &str| {
        let json = setup.path(out);
        let stderr = assert_ok(&suf_run(&[
            "--config",
            s(&cfg),
            "--out-json",
            s(&json),
            "--max-examples",
            "5",
            "--rows",
            "cls",
            "--emulation",
            "output",
            "--cache-dir",
            s(&cache),
        ]));
        (stderr, read_json(&json))
    };
    let entries = || std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    let (first, a) = run("a.json");
    assert!(!first.contains("from the cache"), "{first}");
    assert_eq!(entries(), 1);
    let (second, b) = run("b.json");
    assert!(second.contains("compiled graph from the cache"), "{second}");
    assert_eq!(numbers(&a), numbers(&b));
    // Other weights under the same file name.
    std::fs::write(
        setup.path("cls.onnx"),
        synthetic::to_bytes(&synthetic::bert_classifier(30522, 8, 99)),
    )
    .unwrap();
    let (third, _) = run("c.json");
    assert!(!third.contains("from the cache"), "{third}");
    assert_eq!(entries(), 2);
}

/// A resumed run rewrites `--predictions-out` with the reused rows' lines too.
#[test]
fn predictions_of_reused_rows_stay_in_the_rewritten_file() {
    let setup = Setup::new();
    let cfg = setup.default_config();
    let (json, preds) = (setup.path("r.json"), setup.path("p.jsonl"));
    let args = [
        "--config",
        s(&cfg),
        "--out-json",
        s(&json),
        "--predictions-out",
        s(&preds),
        "--max-examples",
        "7",
        FLOAT_ONLY[0],
        FLOAT_ONLY[1],
    ];
    let mut first = args.to_vec();
    first.extend(["--rows", "cls"]);
    assert_ok(&suf_run(&first));
    let cls_lines = std::fs::read_to_string(&preds).unwrap();
    assert_eq!(cls_lines.lines().count(), 7);
    let stderr = assert_ok(&suf_run(&args));
    assert!(stderr.contains("row cls: already finished"), "{stderr}");
    let all = std::fs::read_to_string(&preds).unwrap();
    assert_eq!(all.lines().count(), 14, "{all}");
    assert!(
        all.starts_with(&cls_lines),
        "the reused row's lines are carried over verbatim"
    );
    // Without the earlier lines the row cannot be reused: it is evaluated again.
    std::fs::remove_file(&preds).unwrap();
    let stderr = assert_ok(&suf_run(&args));
    assert!(stderr.contains("lacks its predictions"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&preds).unwrap().lines().count(), 14);
}

/// A checkpoint whose id2label contradicts the dataset's label order is refused; a matching
/// one is accepted, and without a label_map the report says the order is unchecked.
#[test]
fn a_label_map_contradicting_the_dataset_is_refused() {
    let setup = Setup::new();
    let run = |label_map: Option<Value>| {
        let mut row = setup.row("cls", "glue/sst2");
        if let Some(m) = label_map {
            row["label_map"] = m;
        }
        let cfg = setup.write_config("c.json", vec![row]);
        let (json, md) = (setup.path("o.json"), setup.path("o.md"));
        let _ = std::fs::remove_file(&json);
        let out = suf_run(&[
            "--config",
            s(&cfg),
            "--out-json",
            s(&json),
            "--out-md",
            s(&md),
            "--max-examples",
            "3",
            FLOAT_ONLY[0],
            FLOAT_ONLY[1],
        ]);
        (out, md)
    };
    let (out, _) = run(Some(serde_json::json!({"0": "positive", "1": "negative"})));
    assert_one_line_error(&out, &["row \"cls\"", "contradicts"]);
    let (out, md) = run(Some(serde_json::json!({"0": "negative", "1": "positive"})));
    assert_ok(&out);
    assert!(!std::fs::read_to_string(&md)
        .unwrap()
        .contains("label order unchecked"));
    let (out, md) = run(None);
    assert_ok(&out);
    assert!(std::fs::read_to_string(&md)
        .unwrap()
        .contains("label order unchecked"));
}
