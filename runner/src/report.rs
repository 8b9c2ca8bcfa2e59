//! The JSON report (SPEC section 3 schema plus the exact counts that resume and merge need),
//! its Markdown rendering in the Table 4 layout, and atomic file writes.

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
    pub git_commit: String,
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
    pub peak_rss_mib: Option<f64>,
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
    /// `--find-min-bits`: per level, the smallest ring within the tolerance.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub min_bits: BTreeMap<String, MinBits>,
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
            min_bits: BTreeMap::new(),
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

fn task_of(s: &str) -> Result<Task> {
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

fn fmt_pct(x: f64) -> String {
    format!("{:.2}", x * 100.0)
}

fn fmt_size(n: Option<u64>) -> String {
    match n {
        None => "-".into(),
        Some(n) if n >= 10_000 => format!("{}k", (n as f64 / 1000.0).round()),
        Some(n) if n >= 1_000 => format!("{:.1}k", n as f64 / 1000.0),
        Some(n) => n.to_string(),
    }
}

fn float_extra(f: &FloatSection) -> String {
    match (f.f1, f.word_acc) {
        (Some(a), _) => format!("F1 float {}", fmt_pct(a)),
        (_, Some(a)) => format!("whole-word float {}", fmt_pct(a)),
        _ => String::new(),
    }
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Table 4 layout (SPEC section 3) plus a details table with every level, deltas and agreement.
pub fn to_markdown(report: &Report) -> String {
    let m = &report.meta;
    let mut out = String::new();
    out.push_str("# suf-run: SIGMA Table 4 comparison\n\n");
    out.push_str(&format!(
        "tool {} · commit `{}` · config sha256 `{}` · {} · started {} · finished {}{}\n\n",
        m.tool_version,
        m.git_commit,
        &m.config_sha256[..m.config_sha256.len().min(12)],
        m.machine,
        m.started,
        m.finished.as_deref().unwrap_or("(running)"),
        m.shard
            .as_ref()
            .map(|s| format!(" · shard {s}"))
            .unwrap_or_default()
    ));
    out.push_str("PyTorch Acc and Sigma Acc are SIGMA's reported numbers; SUF Acc is this run's rewritten graph (emulation level `");
    out.push_str(m.emulation.first().map(String::as_str).unwrap_or("output"));
    out.push_str(
        "`); Notes give this run's float accuracy (original graph in tract) and agreement.\n\n",
    );
    out.push_str("| Model | Dataset | Train Size | Val Size | PyTorch Acc | Sigma Acc | SUF Acc | Bitwidth | frac_bits | Notes |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    let first_level = m
        .emulation
        .first()
        .cloned()
        .unwrap_or_else(|| "output".into());
    for r in &report.rows {
        let dataset = task_of(&r.task)
            .map(|t| t.display_name().to_string())
            .unwrap_or_else(|_| r.task.clone());
        let suf = if r.skipped {
            "skipped".to_string()
        } else {
            r.suf
                .get(&first_level)
                .map(|s| fmt_pct(s.acc))
                .unwrap_or_else(|| "-".into())
        };
        let mut notes = Vec::new();
        if let Some(reason) = &r.skip_reason {
            notes.push(format!("skipped: {reason}"));
        }
        if let Some(f) = &r.float {
            notes.push(format!(
                "float (tract) {} on {} examples",
                fmt_pct(f.acc),
                r.examples
            ));
        }
        if let Some(s) = r.suf.get(&first_level) {
            notes.push(format!("agreement {}", fmt_pct(s.agreement)));
        }
        if let Some(n) = &r.notes {
            notes.push(n.clone());
        }
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            md_escape(r.name.as_deref().unwrap_or(&r.id)),
            dataset,
            fmt_size(r.train_size),
            r.val_size
                .map(|v| v.to_string())
                .unwrap_or_else(|| format!("({})", r.sigma_ref.val_size)),
            fmt_pct(r.sigma_ref.pytorch_acc),
            fmt_pct(r.sigma_ref.sigma_acc),
            suf,
            r.n_bits,
            r.frac_bits,
            md_escape(&notes.join("; "))
        ));
    }
    out.push_str("\n## Details\n\n");
    out.push_str("| Row | Examples | Float Acc | Level | SUF Acc | SUF-Float (pp) | SUF-Sigma (pp) | Float-Sigma PyTorch (pp) | Agreement | mean abs logit diff | max abs logit diff | Extra | Float s | SUF s |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in report.rows.iter().filter(|r| !r.skipped) {
        let Some(f) = &r.float else { continue };
        if r.suf.is_empty() {
            out.push_str(&format!(
                "| {} | {} | {} | - | - | - | - | {:+.2} | - | - | - | {} | {:.1} | - |\n",
                r.id,
                r.examples,
                fmt_pct(f.acc),
                r.float_sigma_pp.unwrap_or(0.0),
                float_extra(f),
                f.runtime_s
            ));
        }
        for (level, s) in &r.suf {
            let d = &r.delta_pp[level];
            let extra = match (f.f1, s.f1, f.word_acc, s.word_acc) {
                (Some(a), Some(b), _, _) => format!("F1 float {} / SUF {}", fmt_pct(a), fmt_pct(b)),
                (_, _, Some(a), Some(b)) => {
                    format!("whole-word float {} / SUF {}", fmt_pct(a), fmt_pct(b))
                }
                _ => String::new(),
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:+.2} | {:+.2} | {:+.2} | {} | {:.3e} | {:.3e} | {} | {:.1} | {:.1} |\n",
                r.id,
                r.examples,
                fmt_pct(f.acc),
                level,
                fmt_pct(s.acc),
                d.suf_float,
                d.suf_sigma,
                r.float_sigma_pp.unwrap_or(0.0),
                fmt_pct(s.agreement),
                s.logit_abs_diff.mean,
                s.logit_abs_diff.max,
                extra,
                f.runtime_s,
                s.runtime_s
            ));
        }
    }
    out.push_str(&levels_table(report));
    out
}

/// Float next to every level, and each level's smallest ring (`--find-min-bits`) next to the
/// bitwidth SIGMA chose for the row.
fn levels_table(report: &Report) -> String {
    let rows: Vec<&RowReport> = report
        .rows
        .iter()
        .filter(|r| !r.skipped && r.float.is_some() && !r.suf.is_empty())
        .collect();
    let levels: Vec<&str> = crate::suf::LEVELS
        .iter()
        .copied()
        .filter(|l| rows.iter().any(|r| r.suf.contains_key(*l)))
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let searched = rows.iter().any(|r| !r.min_bits.is_empty());
    let mut out = String::from("\n## Emulation levels");
    if searched {
        out.push_str(" and the smallest ring");
    }
    out.push_str("\n\n");
    if searched {
        let tol = rows
            .iter()
            .flat_map(|r| r.min_bits.values())
            .map(|m| m.tolerance_pp)
            .next()
            .unwrap_or(0.0);
        // One example is 100/examples pp; a tolerance below it means "no example changed".
        let examples = rows.iter().map(|r| r.examples).min().unwrap_or(1).max(1);
        let resolution = 100.0 / examples as f64;
        out.push_str(&format!(
            "Resolution: one example = {resolution:.3} pp ({examples} examples){}. ",
            if tol < resolution {
                "; the tolerance is below it, so within means no example changed"
            } else {
                ""
            }
        ));
        out.push_str(&format!(
            "min n: the smallest ring size whose accuracy stays within {tol} pp of float (f fixed), \
             found from the overflow statistics and confirmed by evaluation; (p) is the no-wrap prediction. \
             \"none; m*\": no ring reaches float (the level's own arithmetic moves accuracy even at \
             n = 64), and m is the smallest ring that reproduces the level's n = 64 accuracy.\n\n"
        ));
    }
    out.push_str("| Row | Examples | Float Acc |");
    for l in &levels {
        out.push_str(&format!(" {l} Acc |"));
    }
    if searched {
        for l in &levels {
            out.push_str(&format!(" min n {l} |"));
        }
    }
    out.push_str(" Bitwidth (SIGMA) |\n|---|---|---|");
    let cols = levels.len() * if searched { 2 } else { 1 } + 1;
    out.push_str(&"---|".repeat(cols));
    out.push('\n');
    for r in &rows {
        let f = r.float.as_ref().expect("filtered above");
        out.push_str(&format!(
            "| {} | {} | {} |",
            r.id,
            r.examples,
            fmt_pct(f.acc)
        ));
        for l in &levels {
            let cell = r.suf.get(*l).map_or("-".to_string(), |s| fmt_pct(s.acc));
            out.push_str(&format!(" {cell} |"));
        }
        if searched {
            for l in &levels {
                let cell = match r.min_bits.get(*l) {
                    None => "-".to_string(),
                    Some(m) => match (m.min_bits, m.min_bits_no_wrap) {
                        (Some(n), _) => format!("{n} (p {})", m.predicted),
                        (None, Some(n)) => format!("none; {n}* (p {})", m.predicted),
                        (None, None) => "none".to_string(),
                    },
                };
                out.push_str(&format!(" {cell} |"));
            }
        }
        out.push_str(&format!(" {} |\n", r.sigma_ref.bitwidth));
    }
    if searched {
        out.push_str(&searched_rings(&rows, &levels));
    }
    out
}

/// Every ring the search evaluated, with accuracy and float agreement, so the answer can be
/// read against the evidence.
fn searched_rings(rows: &[&RowReport], levels: &[&str]) -> String {
    let mut out = String::from("\nSearched rings (n: accuracy %, agreement with float %):\n\n");
    for r in rows {
        for l in levels {
            if let Some(m) = r.min_bits.get(*l) {
                let trials: Vec<String> = m
                    .trials
                    .iter()
                    .map(|t| {
                        format!(
                            "{}: {} / {}",
                            t.n_bits,
                            fmt_pct(t.acc),
                            fmt_pct(t.agreement)
                        )
                    })
                    .collect();
                out.push_str(&format!("- {} {l}: {}\n", r.id, trials.join("; ")));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_table4() {
        assert_eq!(fmt_size(Some(67_349)), "67k");
        assert_eq!(fmt_size(Some(3_668)), "3.7k");
        assert_eq!(fmt_size(Some(104_743)), "105k");
        assert_eq!(fmt_size(None), "-");
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
        assert_eq!(r.float_sigma_pp, Some(pp(0.5, 0.7107)));
        assert_eq!(r.delta_pp["output"].suf_sigma, pp(0.5, 0.7034));
    }
}
