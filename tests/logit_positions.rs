//! Logits only where they are read (`suf_compiler::logit_positions`, the runner's default for
//! decoder rows; `--full-logits` turns it off) on the exported decoder fixtures: the logits
//! LAMBADA scores are the full graph's at every level, bit-identical at levels `ring` and
//! `sigma` (ring values are integers and Reshape/Gather only move them), and predictions equal
//! at float and `output`, where the max |difference| is reported (tract's f32 GEMM may
//! accumulate differently for another row count; this test says so rather than hiding it).
//! A negative control checks the comparison notices logits taken one position off.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use suf_compiler::logit_positions;
use suf_runner::engine::{Engine, TokenBatch};
use suf_runner::evaluate::{lm_read_logits, token_batch};
use suf_runner::logit_slots;
use suf_runner::metrics::argmax;
use suf_runner::suf;
use suf_runner::tokenize::{Inputs, LmInput};

const SEQ: usize = 128;
const BATCH: usize = 4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.onnx"))
}

/// Ten prompts (so the last batch of four is short and repeats its last example) of lengths
/// from 1 to the whole window, final words of 1 to 4 tokens, one prompt shorter than W.
fn examples(vocab: i64) -> Vec<LmInput> {
    let lens = [37, 1, 128, 5, 90, 2, 64, 127, 12, 3];
    let words = [1, 1, 4, 2, 3, 2, 1, 2, 3, 1];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % vocab as u64) as i64
    };
    lens.iter()
        .zip(words)
        .map(|(&len, k)| {
            let prompt: Vec<i64> = (0..len).map(|_| next()).collect();
            let label = next();
            let k = k.min(len);
            // The word's tokens: the prompt's last k - 1, then the label.
            let word = prompt[len - (k - 1)..]
                .iter()
                .copied()
                .chain([label])
                .collect();
            LmInput {
                prompt,
                label,
                word,
            }
        })
        .collect()
}

/// The two graphs of one level: as exported, and with logits at `width` positions.
fn graphs(
    name: &str,
    level: &str,
    width: usize,
) -> (suf_compiler::ModelProto, suf_compiler::ModelProto) {
    let proto = suf::load_model(&fixture(name)).unwrap();
    let restricted = logit_positions::restrict(suf::normalized(&proto), width)
        .unwrap()
        .model;
    match level {
        "float" => (suf::normalized(&proto), suf::normalized(&restricted)),
        _ => (
            suf::compile(&proto, 37, 12, suf::parse_level(level).unwrap()).unwrap(),
            suf::compile(&restricted, 37, 12, suf::parse_level(level).unwrap()).unwrap(),
        ),
    }
}

struct Compared {
    max_abs_diff: f32,
    read: usize,
    bit_identical: bool,
    /// Positions whose argmax differs (must be none).
    flips: Vec<String>,
    /// Negative control: reads whose slot holds another position when the window is
    /// placed one position early, and how many of those the comparison noticed.
    off_by_one_checked: usize,
    off_by_one_differs: usize,
}

fn compare(name: &str, level: &str) -> Compared {
    // The lm_head's vocabulary (the rewrite reads it off the projection's weight).
    let vocab = logit_positions::restrict(suf::load_model(&fixture(name)).unwrap(), 1)
        .unwrap()
        .vocab;
    let ex = examples(vocab);
    let width = logit_slots::width(&ex);
    assert_eq!(width, 4);
    let inputs = Inputs::Lm(ex.clone());
    let (full, part) = graphs(name, level, width);
    let framework = suf::framework();
    let dir = fixture(name).parent().map(Path::to_path_buf);
    let full = Engine::new(&framework, &full, dir.as_deref(), BATCH, SEQ).unwrap();
    let part = Engine::new(&framework, &part, dir.as_deref(), BATCH, SEQ).unwrap();
    assert_eq!(full.logit_width, None);
    assert_eq!(part.logit_width, Some(width));
    assert_eq!(full.output_shape, [BATCH, SEQ, vocab as usize]);
    assert_eq!(part.output_shape, [BATCH, width, vocab as usize]);
    let mut c = Compared {
        max_abs_diff: 0.0,
        read: 0,
        bit_identical: true,
        flips: vec![],
        off_by_one_checked: 0,
        off_by_one_differs: 0,
    };
    for start in (0..ex.len()).step_by(BATCH) {
        let end = (start + BATCH).min(ex.len());
        let tb = token_batch(&inputs, start, end, BATCH, SEQ);
        let a = full.run(&tb).unwrap();
        let b = part.run(&tb).unwrap();
        // The window placed one position early (prompt lengths minus one): what a slot
        // mapped to the wrong position would read.
        let shifted_lens: Vec<usize> = tb.prompt_lens.iter().map(|&l| l.max(2) - 1).collect();
        let shifted = TokenBatch {
            prompt_lens: shifted_lens.clone(),
            input_ids: tb.input_ids.clone(),
            attention_mask: tb.attention_mask.clone(),
            token_type_ids: tb.token_type_ids.clone(),
            ..tb
        };
        let wrong = part.run(&shifted).unwrap();
        for (row, i) in (start..end).enumerate() {
            let ra =
                reals(lm_read_logits(&ex[i], row, a.view(), &full.output_shape, None).unwrap());
            let rb = reals(
                lm_read_logits(&ex[i], row, b.view(), &part.output_shape, Some(width)).unwrap(),
            );
            assert_eq!(ra.len(), ex[i].word.len());
            let (len, k) = (ex[i].prompt.len(), ra.len());
            for (j, (x, y)) in ra.iter().zip(&rb).enumerate() {
                c.read += 1;
                let d = x
                    .iter()
                    .zip(y.iter())
                    .map(|(p, q)| (p - q).abs() as f32)
                    .fold(0f32, f32::max);
                c.max_abs_diff = c.max_abs_diff.max(d);
                c.bit_identical &= x
                    .iter()
                    .zip(y.iter())
                    .all(|(p, q)| p.to_bits() == q.to_bits());
                if argmax(x) != argmax(y) {
                    c.flips.push(format!("example {i}, read position {j}"));
                }
                let slot = width - k + j;
                let wrong_position = logit_slots::position(shifted_lens[row], width, slot);
                if wrong_position != len - k + j {
                    let v = vocab as usize;
                    let w = wrong
                        .view()
                        .slice((row * width + slot) * v..(row * width + slot + 1) * v)
                        .to_f64_vec();
                    c.off_by_one_checked += 1;
                    c.off_by_one_differs += usize::from(w != *x);
                }
            }
        }
    }
    c
}

/// Read logits as f64 (f32 widens exactly; ring levels' outputs are f64 already).
fn reals(reads: Vec<suf_runner::engine::LogitsView>) -> Vec<Vec<f64>> {
    reads.iter().map(|x| x.to_f64_vec()).collect()
}

const DECODERS: [&str; 4] = [
    "gpt2_tiny_op14",
    "gpt2_tiny_op17",
    "gptneo_tiny_op17",
    "llama_tiny_op17",
];

#[test]
fn scored_logits_equal_the_full_graphs_at_every_level() {
    let mut table = vec![];
    for name in DECODERS {
        for level in ["float", "output", "ring", "sigma"] {
            let c = compare(name, level);
            table.push(format!(
                "{name} {level}: {} read positions, max |full - restricted| = {:e}{}",
                c.read,
                c.max_abs_diff,
                if c.bit_identical {
                    " (bit-identical)"
                } else {
                    " (NOT bit-identical: tract's f32 GEMM rounds differently for this row count)"
                }
            ));
            assert!(
                c.flips.is_empty(),
                "{name} {level}: predictions changed at {:?}",
                c.flips
            );
            if level == "ring" || level == "sigma" {
                assert!(
                    c.bit_identical,
                    "{name} {level}: ring logits must be exact, max |diff| {}",
                    c.max_abs_diff
                );
            } else {
                // f32 reassociation at most: far below the 2^-12 grid.
                assert!(c.max_abs_diff < 1e-4, "{name} {level}: {}", c.max_abs_diff);
            }
            // The comparison notices every read a window one position off gets wrong.
            assert!(c.off_by_one_checked >= 15, "{name} {level}");
            assert_eq!(
                c.off_by_one_differs, c.off_by_one_checked,
                "{name} {level}: a shifted window went unnoticed"
            );
        }
    }
    eprintln!("{}", table.join("\n"));
}

#[test]
fn bert_fixtures_already_classify_one_vector_per_example() {
    // No rewrite for encoders: the pooler gathers [CLS] before the dense layer and the
    // classifier, so the output is [batch, classes] and nothing runs per position after it.
    for name in ["bert_tiny_op14", "bert_tiny_op17"] {
        let proto = suf::load_model(&fixture(name)).unwrap();
        let graph = proto.graph.as_ref().unwrap();
        let pooler = graph
            .node
            .iter()
            .find(|n| n.op_type == "Gather" && n.name.contains("pooler"))
            .unwrap_or_else(|| panic!("{name}: no pooler Gather"));
        let axis = pooler.attribute.iter().find(|a| a.name == "axis").unwrap();
        assert_eq!(axis.i, 1, "{name}: the pooler picks one position");
        let engine =
            Engine::new(&suf::framework(), &suf::normalized(&proto), None, 2, SEQ).unwrap();
        assert_eq!(engine.output_shape, [2, 2], "{name}");
        let err = logit_positions::restrict(proto, 1).unwrap_err().to_string();
        assert!(
            err.contains("rank 2") || err.contains("Gemm"),
            "{name}: {err}"
        );
    }
}

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

/// suf-run on the GPT-2 fixture row with real LAMBADA passages, every level, with and
/// without the rewrite: the same predictions for every example and the same counts.
#[test]
fn suf_run_predicts_the_same_with_and_without_full_logits() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = vec![];
    for full in [false, true] {
        let json = dir.path().join(format!("r{full}.json"));
        let preds = dir.path().join(format!("p{full}.jsonl"));
        let mut args = vec![
            "--config",
            "configs/fixtures.json",
            "--rows",
            "fixture-gpt2-lambada",
            "--max-examples",
            "21",
            "--emulation",
            "output,ring,sigma",
            "--out-json",
            json.to_str().unwrap(),
            "--predictions-out",
            preds.to_str().unwrap(),
        ];
        if full {
            args.push("--full-logits");
        }
        let out = suf_run(&args);
        let log = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{log}");
        let r = read_json(&json);
        let row = &r["rows"][0];
        assert_eq!(r["meta"]["full_logits"], full);
        if full {
            assert!(
                log.contains("logits at all 128 positions (--full-logits)"),
                "{log}"
            );
            assert_eq!(row["logit_width"], Value::Null);
        } else {
            let w = row["logit_width"].as_u64().unwrap();
            assert!(w >= 1, "{row}");
            let line = format!("logits at {w} of 128 positions per example");
            assert!(log.contains(&line), "{log}");
            assert!(
                row["run_notes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|n| n.as_str().unwrap().contains(&line)),
                "{row}"
            );
        }
        let lines = std::fs::read_to_string(&preds).unwrap();
        runs.push((row.clone(), lines));
    }
    let ((a, pa), (b, pb)) = (&runs[0], &runs[1]);
    assert_eq!(pa, pb, "per-example predictions differ");
    assert_eq!(a["counts"]["float"], b["counts"]["float"]);
    for level in ["output", "ring", "sigma"] {
        assert_eq!(
            a["counts"]["suf"][level]["counts"], b["counts"]["suf"][level]["counts"],
            "{level}"
        );
        assert_eq!(
            a["counts"]["suf"][level]["agree"],
            b["counts"]["suf"][level]["agree"]
        );
    }
    // A row computed with the other setting is never reused.
    assert_ne!(a["resume_key"], b["resume_key"]);
}

/// The float graph at GPT-2's hidden size (768; the fixtures' is 8), where tract's GEMM
/// might treat the lm_head's B*W rows differently from B*S (down to one row, a
/// matrix-vector product): prints the max |difference| and requires equal predictions
/// (f32 reassociation at most).
#[test]
fn float_logits_at_gpt2_hidden_size() {
    let (vocab, hidden) = (3000, 768);
    let proto = suf_runner::synthetic::causal_lm(vocab, hidden, 11);
    let framework = suf::framework();
    let full_proto = suf::normalized(&proto);
    let all = examples(vocab);
    let one_token: Vec<LmInput> = all.iter().filter(|e| e.word.len() == 1).cloned().collect();
    for (batch, ex) in [(8, all.clone()), (1, one_token)] {
        let width = logit_slots::width(&ex);
        let restricted = logit_positions::restrict(proto.clone(), width)
            .unwrap()
            .model;
        let full = Engine::new(&framework, &full_proto, None, batch, SEQ).unwrap();
        let part =
            Engine::new(&framework, &suf::normalized(&restricted), None, batch, SEQ).unwrap();
        let inputs = Inputs::Lm(ex.clone());
        let (mut max, mut identical, mut reads) = (0f32, true, 0);
        for start in (0..ex.len()).step_by(batch) {
            let end = (start + batch).min(ex.len());
            let tb = token_batch(&inputs, start, end, batch, SEQ);
            let (a, b) = (full.run(&tb).unwrap(), part.run(&tb).unwrap());
            for (row, i) in (start..end).enumerate() {
                let ra =
                    reals(lm_read_logits(&ex[i], row, a.view(), &full.output_shape, None).unwrap());
                let rb = reals(
                    lm_read_logits(&ex[i], row, b.view(), &part.output_shape, Some(width)).unwrap(),
                );
                for (x, y) in ra.iter().zip(&rb) {
                    reads += 1;
                    assert_eq!(argmax(x), argmax(y), "batch {batch}, example {i}");
                    for (p, q) in x.iter().zip(y.iter()) {
                        max = max.max((p - q).abs() as f32);
                        identical &= p.to_bits() == q.to_bits();
                    }
                }
            }
        }
        eprintln!(
            "hidden {hidden}, vocab {vocab}, batch {batch}, W {width} ({} lm_head rows instead of {}): {reads} reads, max |full - restricted| = {max:e}{}",
            batch * width,
            batch * SEQ,
            if identical {
                " (bit-identical)"
            } else {
                " (NOT bit-identical: tract's f32 GEMM rounds differently for B*W rows than for B*S)"
            }
        );
        assert!(max < 1e-3, "batch {batch}: {max}");
    }
}
