//! The JSON report (SPEC section 3 schema plus the exact counts that resume and merge need),
//! the numbers derived from those counts, and atomic file writes. `markdown.rs` renders it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::{Row, Task};
use crate::evaluate::RowTally;
use crate::metrics::{Counts, DiffAcc, DiffStats};
use crate::min_bits::MinBits;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub meta: Meta,
    pub rows: Vec<RowReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardSpec {
    pub index: usize,
    pub count: usize,
}

impl std::fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub tool_version: String,
    /// The checkout's commit at run time, with "-dirty" when tracked files had changes.
    pub git_commit: String,
    /// SHA-256 of the executable that computed the numbers (reports before it: empty).
    #[serde(default)]
    pub binary_sha256: String,
    pub config_sha256: String,
    pub config: String,
    pub machine: String,
    pub started: String,
    pub finished: Option<String>,
    /// False while rows are still being evaluated (the file is rewritten after every row).
    pub complete: bool,
    pub device: String,
    pub seed: u64,
    pub max_examples: Option<usize>,
    pub batch_size: usize,
    pub workers: usize,
    pub emulation: Vec<String>,
    pub shard: Option<ShardSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_from: Option<Vec<String>>,
    /// Peak resident set size of the whole run (the largest of the rows' peaks and what the
    /// process held between them), MiB.
    pub peak_rss_mib: Option<f64>,
    /// `--full-logits`: decoder rows computed the vocabulary logits at every position
    /// instead of only where they are read (reports before the option: false).
    #[serde(default)]
    pub full_logits: bool,
    /// The length buckets examples were padded to (`buckets.rs`), ascending, the last the
    /// rows' seq_len; null: every example padded to seq_len (`--no-length-buckets`, and
    /// reports before the option).
    #[serde(default)]
    pub length_buckets: Option<Vec<usize>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloatSection {
    pub acc: f64,
    pub acc_pct: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f1: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub word_acc: Option<f64>,
    pub runtime_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogitDiff {
    pub mean: f64,
    pub max: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SufSection {
    pub acc: f64,
    pub acc_pct: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f1: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub word_acc: Option<f64>,
    pub agreement: f64,
    pub logit_abs_diff: LogitDiff,
    pub runtime_s: f64,
    /// Levels ring and sigma: the largest |value| (real units) any SUF node carried between
    /// nodes. Every one was carried exactly (an i64 ring tensor): a value that could not be
    /// would have stopped the run with an error naming the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_abs_carried: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact_transport: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SigmaRefOut {
    pub pytorch_acc: f64,
    pub sigma_acc: f64,
    pub bitwidth: u32,
    pub train_size: Option<u64>,
    pub val_size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeltaPp {
    pub suf_float: f64,
    pub suf_sigma: f64,
}

/// Where a row's wall time went, in seconds. The phases run one after the other, except
/// that `evaluate_s` is the float graph and every level together (batches interleave
/// them; each graph's own execution is its `runtime_s`, thread-seconds). Shards add up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// Reading the data, tokenizing, hashing the model's files.
    pub prepare_s: f64,
    /// Reading and decoding the ONNX file, the logit-positions rewrite, and tract's parse
    /// of every graph.
    pub load_s: f64,
    /// The SUF pass (or reading its result from `--cache-dir`), every level.
    pub compile_s: f64,
    /// tract's typing with the fixed input facts, optimisation and plan, every graph.
    pub optimise_s: f64,
    /// Every example through the float graph and every level (wall clock).
    pub evaluate_s: f64,
    /// `--find-min-bits`: the whole search (its compiles and evaluations included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_bits_s: Option<f64>,
    /// The row's wall time (`wall_s`).
    pub total_s: f64,
    /// Per graph ("float" and each level): tract's parse, the SUF pass, tract's optimisation.
    pub graphs: BTreeMap<String, GraphPhases>,
    /// Per length bucket (its length as the key): batches run, tract's optimisation of
    /// every graph for that shape (part of `optimise_s`) and its evaluation wall time (part
    /// of `evaluate_s`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub buckets: BTreeMap<usize, BucketPhases>,
    /// `--device cuda`, level `ring`: tensors of its float functions with an output the GPU
    /// could not certify equal to the CPU's, recomputed whole by the CPU op (exact either
    /// way; suf-gpu's ring_fn.rs). Shown so a slow ring row on a GPU can be explained.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ring_tensors_recomputed_on_cpu: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BucketPhases {
    pub batches: usize,
    pub optimise_s: f64,
    pub evaluate_s: f64,
}

/// How many of a row's examples were padded to one bucket length (shards add up).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BucketCount {
    pub seq_len: usize,
    pub examples: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GraphPhases {
    pub load_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_s: Option<f64>,
    pub optimise_s: f64,
    /// `--device cuda`: where the graph's nodes ran (CPU nodes, SUF nodes on the CPU,
    /// host/device copies per run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<suf_gpu::Placement>,
}

impl Phases {
    /// `other`'s times added to these (merged shards).
    pub fn add(&mut self, other: &Phases) {
        self.prepare_s += other.prepare_s;
        self.load_s += other.load_s;
        self.compile_s += other.compile_s;
        self.optimise_s += other.optimise_s;
        self.evaluate_s += other.evaluate_s;
        self.min_bits_s = match (self.min_bits_s, other.min_bits_s) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.total_s += other.total_s;
        self.ring_tensors_recomputed_on_cpu += other.ring_tensors_recomputed_on_cpu;
        for (len, b) in &other.buckets {
            let e = self.buckets.entry(*len).or_default();
            e.batches += b.batches;
            e.optimise_s += b.optimise_s;
            e.evaluate_s += b.evaluate_s;
        }
        for (name, g) in &other.graphs {
            let e = self.graphs.entry(name.clone()).or_default();
            e.load_s += g.load_s;
            e.optimise_s += g.optimise_s;
            e.compile_s = match (e.compile_s, g.compile_s) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
        }
    }
}

/// Exact per-graph counts behind a row's numbers; shards add up to the single run's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SufCounts {
    pub counts: Counts,
    pub agree: u64,
    pub diff: DiffStats,
    pub runtime_s: f64,
    /// Shards merge it as the maximum of their maxima (exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_abs_carried: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowCounts {
    pub float: Counts,
    pub float_runtime_s: f64,
    pub suf: BTreeMap<String, SufCounts>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowReport {
    pub id: String,
    pub name: Option<String>,
    pub family: String,
    pub task: String,
    pub model: String,
    pub model_sha256: Option<String>,
    /// The model's external-data files (relative to its folder) with their SHA-256.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub external_data_sha256: BTreeMap<String, String>,
    pub seq_len: usize,
    pub n_bits: u32,
    pub frac_bits: u32,
    pub train_size: Option<u64>,
    pub val_size: Option<u64>,
    pub examples: u64,
    pub skipped: bool,
    pub skip_reason: Option<String>,
    pub float: Option<FloatSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pytorch: Option<serde_json::Value>,
    pub suf: BTreeMap<String, SufSection>,
    pub sigma_ref: SigmaRefOut,
    pub delta_pp: BTreeMap<String, DeltaPp>,
    pub float_sigma_pp: Option<f64>,
    pub notes: Option<String>,
    /// Identifies the row's inputs and options; a resumed run reuses a finished row only when it matches.
    pub resume_key: String,
    pub counts: Option<RowCounts>,
    pub wall_s: f64,
    /// The row's time by phase (null for skipped rows).
    #[serde(default)]
    pub phases: Option<Phases>,
    /// Peak resident set size while this row ran, MiB (Linux: VmHWM after resetting it
    /// through /proc/self/clear_refs at the row's start); null, with a run note, where it
    /// cannot be measured. Merged shards: the largest.
    #[serde(default)]
    pub peak_rss_mib: Option<f64>,
    /// Decoder rows: the logits were computed at this many positions per example (the
    /// last ones of each prompt, which the protocol reads); null: at every position.
    #[serde(default)]
    pub logit_width: Option<usize>,
    /// Examples per length bucket they were padded to, ascending (one entry, seq_len, when
    /// buckets are off).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub length_buckets: Vec<BucketCount>,
    /// `--find-min-bits`: per level, the smallest ring within the tolerance.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub min_bits: BTreeMap<String, MinBits>,
    /// What this run decided or could not check about the row (scored output, label order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub run_notes: Vec<String>,
    /// SHA-256 of this row's `--predictions-out` lines, so a resumed run can carry them over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictions_sha256: Option<String>,
}

fn pct(x: f64) -> f64 {
    (x * 10_000.0).round() / 100.0
}

fn pp(a: f64, b: f64) -> f64 {
    ((a - b) * 100.0 * 1e6).round() / 1e6
}

impl RowReport {
    /// The row before evaluation: config facts only.
    pub fn pending(row: &Row, name_frac: u32, seq_len: usize, resume_key: String) -> Self {
        RowReport {
            id: row.id.clone(),
            name: row.name.clone(),
            family: row.family.as_str().into(),
            task: row.task.as_str().into(),
            model: row.model.clone(),
            model_sha256: None,
            external_data_sha256: BTreeMap::new(),
            seq_len,
            n_bits: row.n_bits,
            frac_bits: name_frac,
            train_size: row.sigma_ref.train_size,
            val_size: None,
            examples: 0,
            skipped: false,
            skip_reason: None,
            float: None,
            pytorch: None,
            suf: BTreeMap::new(),
            sigma_ref: SigmaRefOut {
                pytorch_acc: row.sigma_ref.pytorch_acc,
                sigma_acc: row.sigma_ref.sigma_acc,
                bitwidth: row.n_bits,
                train_size: row.sigma_ref.train_size,
                val_size: row.sigma_ref.val_size,
            },
            delta_pp: BTreeMap::new(),
            float_sigma_pp: None,
            notes: row.notes.clone(),
            resume_key,
            counts: None,
            wall_s: 0.0,
            phases: None,
            peak_rss_mib: None,
            logit_width: None,
            length_buckets: Vec::new(),
            min_bits: BTreeMap::new(),
            run_notes: Vec::new(),
            predictions_sha256: None,
        }
    }

    pub fn skip(mut self, reason: String) -> Self {
        self.skipped = true;
        self.skip_reason = Some(reason);
        self
    }

    /// Fills every number from exact counts (the single source for runs and merges).
    pub fn fill_from_counts(&mut self, counts: RowCounts) -> Result<()> {
        let task = task_of(&self.task)?;
        let with_f1 = task == Task::Mrpc;
        let is_lm = task == Task::LambadaOpenai;
        let f = &counts.float;
        self.examples = f.n;
        self.float = Some(FloatSection {
            acc: f.accuracy(),
            acc_pct: pct(f.accuracy()),
            f1: with_f1.then(|| f.f1()),
            word_acc: is_lm.then(|| f.word_accuracy()),
            runtime_s: counts.float_runtime_s,
        });
        self.float_sigma_pp = Some(pp(f.accuracy(), self.sigma_ref.pytorch_acc));
        self.suf.clear();
        self.delta_pp.clear();
        for (level, s) in &counts.suf {
            let c = &s.counts;
            let diff = DiffAcc::from_stats(&s.diff)?;
            self.suf.insert(
                level.clone(),
                SufSection {
                    acc: c.accuracy(),
                    acc_pct: pct(c.accuracy()),
                    f1: with_f1.then(|| c.f1()),
                    word_acc: is_lm.then(|| c.word_accuracy()),
                    agreement: if c.n == 0 {
                        0.0
                    } else {
                        s.agree as f64 / c.n as f64
                    },
                    logit_abs_diff: LogitDiff {
                        mean: diff.mean(),
                        max: diff.max,
                    },
                    runtime_s: s.runtime_s,
                    max_abs_carried: s.max_abs_carried,
                    exact_transport: s.max_abs_carried.map(|_| true),
                },
            );
            self.delta_pp.insert(
                level.clone(),
                DeltaPp {
                    suf_float: pp(c.accuracy(), f.accuracy()),
                    suf_sigma: pp(c.accuracy(), self.sigma_ref.sigma_acc),
                },
            );
        }
        self.counts = Some(counts);
        Ok(())
    }
}

/// `models/x.onnx` -> `models/x.pytorch.json`: a measured PyTorch run of that ONNX's source.
pub fn pytorch_record(model: &Path) -> std::path::PathBuf {
    model.with_extension("pytorch.json")
}

/// The `pytorch` entry of a row: the PyTorch record beside the model, when it was measured
/// for this very ONNX file (its `onnx_sha256`) and holds an accuracy; else none.
pub fn read_pytorch_record(model: &Path, model_sha256: &str) -> Result<Option<serde_json::Value>> {
    let path = pytorch_record(model);
    if !path.is_file() {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", path.display()))?;
    let (Some(acc), Some(sha)) = (
        v.get("pytorch_acc").and_then(|a| a.as_f64()),
        v.get("onnx_sha256").and_then(|s| s.as_str()),
    ) else {
        return Ok(None);
    };
    if sha != model_sha256 {
        return Ok(None);
    }
    Ok(Some(serde_json::json!({
        "acc": acc,
        "f1": v.get("pytorch_f1").and_then(|f| f.as_f64()),
        "examples": v.get("val_size").and_then(|n| n.as_u64()),
        "source": path.display().to_string(),
        "onnx_sha256": sha,
    })))
}

pub fn task_of(s: &str) -> Result<Task> {
    serde_json::from_value(serde_json::Value::String(s.into()))
        .with_context(|| format!("unknown task \"{s}\""))
}

pub fn counts_from_tally(t: &RowTally) -> RowCounts {
    RowCounts {
        float: t.float.counts,
        float_runtime_s: t.float.runtime.as_secs_f64(),
        suf: t
            .suf
            .iter()
            .map(|(k, s)| {
                (
                    k.clone(),
                    SufCounts {
                        counts: s.graph.counts,
                        agree: s.agree,
                        diff: s.diff.to_stats(),
                        runtime_s: s.graph.runtime.as_secs_f64(),
                        max_abs_carried: s.max_abs_carried,
                    },
                )
            })
            .collect(),
    }
}

/// Writes `bytes` to `path` via a temporary file in the same directory and a rename, so a
/// reader (or a crash) never sees a half-written report.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))?;
    let file_name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> Result<()> {
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

pub fn to_json(report: &Report) -> Result<Vec<u8>> {
    let mut v = serde_json::to_vec_pretty(report)?;
    v.push(b'\n');
    Ok(v)
}

pub fn read_report(path: &Path) -> Result<Report> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read report {}", path.display()))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a suf-run report", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_phases_add_the_ring_recomputations_and_zero_is_not_written() {
        let mut a = Phases {
            ring_tensors_recomputed_on_cpu: 2,
            ..Default::default()
        };
        let b = Phases {
            ring_tensors_recomputed_on_cpu: 3,
            ..Default::default()
        };
        a.add(&b);
        assert_eq!(a.ring_tensors_recomputed_on_cpu, 5);
        let text = serde_json::to_string(&a).unwrap();
        assert!(
            text.contains("\"ring_tensors_recomputed_on_cpu\":5"),
            "{text}"
        );
        let none = serde_json::to_string(&Phases::default()).unwrap();
        assert!(!none.contains("ring_tensors_recomputed"), "{none}");
        let back: Phases = serde_json::from_str(&none).unwrap();
        assert_eq!(back.ring_tensors_recomputed_on_cpu, 0);
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn numbers_come_from_counts() {
        let row: Row = serde_json::from_str(
            r#"{"id": "r", "family": "bert_seqcls", "task": "glue/mrpc", "model": "m", "tokenizer": "t", "data": "d",
                "n_bits": 37, "sigma_ref": {"train_size": 3668, "val_size": 408, "pytorch_acc": 0.7107, "sigma_acc": 0.7034}}"#,
        )
        .unwrap();
        let mut r = RowReport::pending(&row, 12, 128, "k".into());
        let mut float = Counts::default();
        for (p, l) in [(1, 1), (0, 1), (1, 0), (0, 0)] {
            float.add_classification(p, l);
        }
        let mut diff = DiffAcc::default();
        diff.add_slices(&[1.0, 2.0], &[1.5, 2.0]);
        let suf = SufCounts {
            counts: float,
            agree: 3,
            diff: diff.to_stats(),
            runtime_s: 1.0,
            max_abs_carried: None,
        };
        r.fill_from_counts(RowCounts {
            float,
            float_runtime_s: 2.0,
            suf: [("output".to_string(), suf)].into(),
        })
        .unwrap();
        let f = r.float.as_ref().unwrap();
        assert_eq!((f.acc, f.acc_pct, f.f1), (0.5, 50.0, Some(0.5)));
        let s = &r.suf["output"];
        assert_eq!(
            (s.agreement, s.logit_abs_diff.mean, s.logit_abs_diff.max),
            (0.75, 0.25, 0.5)
        );
        // Written out by hand: 50 % against SIGMA's 71.07 % and 70.34 %.
        assert_eq!(r.float_sigma_pp, Some(-21.07));
        assert_eq!(r.delta_pp["output"].suf_sigma, -20.34);
        assert_eq!(r.delta_pp["output"].suf_float, 0.0);
    }
}
