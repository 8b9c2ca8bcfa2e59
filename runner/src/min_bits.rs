//! `suf-run --find-min-bits`: for each emulation level, the smallest ring size n whose SUF
//! accuracy stays within a tolerance of the float graph's (f stays the row's frac_bits).
//!
//! 1. One pass at n = 64 with the SUF nodes' statistics on records every node's largest value
//!    at scale f (and at 2f for ring products). The smallest ring that holds them all is the
//!    prediction: below it, some node wraps on these very inputs. That pass is also the
//!    n = 64 trial.
//! 2. The prediction is evaluated. If it holds, n steps down one bit at a time until the
//!    accuracy leaves the tolerance (a wrap of a few elements need not flip a prediction).
//!    If it does not hold (a wrap the statistics cannot see, such as a sum inside SIGMA's
//!    LayerNorm), bisection between the prediction and 64 finds the smallest n that holds.
//!
//! Where nothing wraps, a level's outputs do not depend on n at all: a level that misses the
//! tolerance at n = 64 misses it at every n, because its f-bit rounding alone moves accuracy.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use suf_compiler::stats::{self, NodeStats};
use suf_compiler::Emulation;
use suf_fixed::ring_bits_for;
use tract_onnx::pb::ModelProto;

use crate::buckets::Bucket;
use crate::engine::Parsed;
use crate::evaluate;
use crate::metrics::Counts;
use crate::plans::GraphPlans;
use crate::tokenize::Inputs;

/// Default tolerance of the search, in percentage points of accuracy.
pub const DEFAULT_TOLERANCE_PP: f64 = 0.1;
/// The largest ring the emulation supports, where the search starts.
pub const MAX_RING_BITS: u32 = 64;

/// One evaluation of a level at one ring size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub n_bits: u32,
    pub acc: f64,
    /// SUF accuracy minus float accuracy, in percentage points.
    pub delta_pp: f64,
    /// Share of examples whose SUF prediction equals the float prediction.
    pub agreement: f64,
    /// |delta_pp| <= the tolerance.
    pub within: bool,
    /// SUF accuracy minus this level's own accuracy at n = 64 (no wraps), in points.
    pub delta_no_wrap_pp: f64,
    /// |delta_no_wrap_pp| <= the tolerance.
    pub within_no_wrap: bool,
}

/// The search's outcome for one level of one row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinBits {
    pub frac_bits: u32,
    pub tolerance_pp: f64,
    /// The smallest n at which no SUF node's recorded values wrap (from the n = 64 pass).
    pub predicted: u32,
    /// The node whose range sets `predicted`, and where it binds: "f" (its output), "2f" (a
    /// ring product before truncation) or "internal" (inside a SIGMA softmax/LayerNorm).
    pub binding_node: Option<String>,
    pub binding_scale: Option<String>,
    /// The smallest n within the tolerance of float (every evaluated n from it up to the
    /// prediction is within too); None when even n = 64 is not.
    pub min_bits: Option<u32>,
    /// Only when `min_bits` is None: the smallest n within the tolerance of the level's own
    /// n = 64 accuracy, i.e. where the ring size stops mattering for this level.
    pub min_bits_no_wrap: Option<u32>,
    /// Every evaluation, in the order made.
    pub trials: Vec<Trial>,
    pub note: String,
}

/// What a search needs of the row, shared by its levels.
pub struct Search<'a> {
    pub row_id: &'a str,
    /// Rewrites the row's model for (n_bits, level) (through the graph cache when there is one).
    pub compile: &'a dyn Fn(u32, Emulation) -> Result<ModelProto>,
    pub model_dir: Option<&'a Path>,
    pub framework: &'a tract_onnx::Onnx,
    pub inputs: &'a Inputs,
    pub batch: usize,
    /// Where the trials run (the row's device).
    pub device: crate::device::Device,
    /// The row's length buckets (the main evaluation's): every trial pads as it did.
    pub buckets: &'a [Bucket],
    pub frac_bits: u32,
    pub float_counts: Counts,
    pub float_preds: &'a [i64],
    pub pool: &'a rayon::ThreadPool,
    pub tolerance_pp: f64,
}

impl Search<'_> {
    pub fn run(&self, level: Emulation) -> Result<MinBits> {
        let f = self.frac_bits;
        let (top, recorded) = self.trial(level, MAX_RING_BITS, None, true)?;
        let (predicted, binding) = predicted_bits(&recorded, f);
        let mut out = MinBits {
            frac_bits: f,
            tolerance_pp: self.tolerance_pp,
            predicted,
            binding_node: binding.as_ref().map(|(n, _)| n.clone()),
            binding_scale: binding.map(|(_, s)| s.to_string()),
            min_bits: None,
            min_bits_no_wrap: None,
            trials: vec![top.clone()],
            note: String::new(),
        };
        // Held to float; or, when the level misses float even without wraps (its outputs do
        // not depend on n then), to its own n = 64 accuracy: where the ring stops mattering.
        let against_float = top.within;
        let ok = |t: &Trial| {
            if against_float {
                t.within
            } else {
                t.within_no_wrap
            }
        };
        let mut trials = vec![];
        let (found, how) = smallest(predicted, f, out.binding_node.as_deref(), &ok, &mut |n| {
            let attempt = self.attempt(level, n, top.acc)?;
            if let Attempt::Ran(t) = &attempt {
                trials.push(t.clone());
            }
            Ok(attempt)
        })?;
        out.trials.extend(trials);
        if against_float {
            out.min_bits = Some(found);
            out.note = how;
        } else {
            out.min_bits_no_wrap = Some(found);
            out.note = format!(
                "not within {} pp of float even at n = {MAX_RING_BITS} ({:+.2} pp): without wraps the result does not depend on n, so this level's own arithmetic (f = {f}) moves accuracy; n = {found} reproduces its n = {MAX_RING_BITS} accuracy: {how}",
                self.tolerance_pp, top.delta_pp
            );
        }
        Ok(out)
    }

    /// One evaluation at `n_bits`, or why the level cannot be compiled at that size. Only
    /// the rewrite's refusal (its parameters bound n from below) means "cannot be built";
    /// a graph tract cannot load or a failing run is an error of the search.
    fn attempt(&self, level: Emulation, n_bits: u32, no_wrap_acc: f64) -> Result<Attempt> {
        let rewritten = match (self.compile)(n_bits, level) {
            Ok(m) => m,
            Err(e) => return Ok(Attempt::Unbuildable(format!("{e:#}"))),
        };
        let (t, _) = self.trial_of(level, n_bits, &rewritten, Some(no_wrap_acc), false)?;
        Ok(Attempt::Ran(t))
    }

    /// Evaluates `level` at ring size `n_bits` over every input; with `record`, also returns
    /// the SUF nodes' statistics of that pass. `no_wrap_acc` is the level's n = 64 accuracy
    /// (None: this is that pass).
    fn trial(
        &self,
        level: Emulation,
        n_bits: u32,
        no_wrap_acc: Option<f64>,
        record: bool,
    ) -> Result<(Trial, BTreeMap<String, NodeStats>)> {
        let rewritten = (self.compile)(n_bits, level)
            .with_context(|| format!("compiling {level} at n_bits = {n_bits}"))?;
        self.trial_of(level, n_bits, &rewritten, no_wrap_acc, record)
    }

    fn trial_of(
        &self,
        level: Emulation,
        n_bits: u32,
        rewritten: &ModelProto,
        no_wrap_acc: Option<f64>,
        record: bool,
    ) -> Result<(Trial, BTreeMap<String, NodeStats>)> {
        let parsed = Parsed::new(self.framework, rewritten, self.model_dir)
            .with_context(|| format!("SUF graph ({level}, n_bits = {n_bits})"))?;
        let lengths: Vec<usize> = self.buckets.iter().map(|b| b.seq_len).collect();
        let mut plans = GraphPlans::new(level.as_str(), self.device, parsed, self.batch, &lengths);
        let progress = ProgressBar::new(self.inputs.len() as u64);
        progress.set_style(
            ProgressStyle::with_template("{prefix:>28} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
                .expect("static template")
                .progress_chars("=> "),
        );
        progress.set_prefix(format!("{} {level} n={n_bits}", self.row_id));
        if record {
            stats::set_enabled(true);
        }
        let result = evaluate::evaluate_one(
            self.inputs,
            self.buckets,
            &mut plans,
            self.float_preds,
            self.pool,
            &progress,
        )
        .with_context(|| format!("n_bits = {n_bits}"));
        let recorded = if record {
            stats::set_enabled(false);
            stats::take()
        } else {
            BTreeMap::new()
        };
        progress.finish_and_clear();
        let (counts, agree) = result?;
        let acc = counts.accuracy();
        let delta_pp = (acc - self.float_counts.accuracy()) * 100.0;
        let delta_no_wrap_pp = (acc - no_wrap_acc.unwrap_or(acc)) * 100.0;
        let within = |d: f64| d.abs() <= self.tolerance_pp + 1e-9;
        let agreement = if counts.n == 0 {
            0.0
        } else {
            agree as f64 / counts.n as f64
        };
        let trial = Trial {
            n_bits,
            acc,
            delta_pp,
            agreement,
            within: within(delta_pp),
            delta_no_wrap_pp,
            within_no_wrap: within(delta_no_wrap_pp),
        };
        eprintln!(
            "row {}: min-bits {level} n={n_bits}: acc {:.2}% ({:+.2} pp vs float, agreement {:.2}%){}",
            self.row_id,
            trial.acc * 100.0,
            trial.delta_pp,
            trial.agreement * 100.0,
            if trial.within { "" } else { " outside tolerance" }
        );
        Ok((trial, recorded))
    }
}

/// What trying one ring size gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Ran(Trial),
    /// The level's rewrite refuses this n (e.g. a truncation shift that must stay below n).
    Unbuildable(String),
}

/// The smallest n whose trial is `ok`, given that n = 64 is: a descent from the no-wrap
/// prediction if it holds, else bisection between it and 64. Returns n and how it was found.
fn smallest(
    predicted: u32,
    f: u32,
    binding_node: Option<&str>,
    ok: &dyn Fn(&Trial) -> bool,
    at: &mut dyn FnMut(u32) -> Result<Attempt>,
) -> Result<(u32, String)> {
    if predicted > MAX_RING_BITS {
        let why = format!(
            "values exceed a {MAX_RING_BITS}-bit ring at {}, yet n = {MAX_RING_BITS} holds",
            binding_node.unwrap_or("?")
        );
        return Ok((MAX_RING_BITS, why));
    }
    let holds = |a: &Attempt| matches!(a, Attempt::Ran(t) if ok(t));
    if predicted == MAX_RING_BITS || holds(&at(predicted)?) {
        let mut n = predicted;
        while n > f + 1 {
            match at(n - 1)? {
                Attempt::Ran(t) if ok(&t) => n -= 1,
                Attempt::Ran(_) => break,
                Attempt::Unbuildable(why) => {
                    let why = format!(
                        "every evaluated n down to {n} holds; n = {} cannot be built ({why})",
                        n - 1
                    );
                    return Ok((n, why));
                }
            }
        }
        let how = if n < predicted {
            format!(
                "{} bits below the no-wrap prediction: the wraps there do not move accuracy past the tolerance",
                predicted - n
            )
        } else {
            "the no-wrap prediction; one bit less leaves the tolerance".into()
        };
        return Ok((n, how));
    }
    // The prediction fails and 64 holds: bisect (lo fails, hi holds). A size the level
    // cannot be built at fails like one that misses the tolerance.
    let (mut lo, mut hi) = (predicted, MAX_RING_BITS);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if holds(&at(mid)?) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let why = format!(
        "the no-wrap prediction {predicted} does not hold: a value the node statistics do not see wraps (found by bisection up to {MAX_RING_BITS})"
    );
    Ok((hi, why))
}

/// The smallest ring holding every recorded value, and the node (and scale) that sets it.
pub fn predicted_bits(
    recorded: &BTreeMap<String, NodeStats>,
    f: u32,
) -> (u32, Option<(String, &'static str)>) {
    let mut best = (f + 1, None);
    for (node, s) in recorded {
        let at_f = ring_bits_for(s.max_abs, f);
        if at_f > best.0 {
            best = (at_f, Some((node.clone(), "f")));
        }
        if let Some(m) = s.max_abs_2f {
            let at_2f = ring_bits_for(m, 2 * f);
            if at_2f > best.0 {
                best = (at_2f, Some((node.clone(), "2f")));
            }
        }
        if let Some(bits) = s.internal_bits.filter(|&b| b > best.0) {
            best = (bits, Some((node.clone(), "internal")));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(max_abs: f64, max_abs_2f: Option<f64>) -> NodeStats {
        NodeStats {
            max_abs,
            max_abs_2f,
            ..Default::default()
        }
    }

    fn trial(n_bits: u32, within: bool) -> Trial {
        Trial {
            n_bits,
            acc: 0.5,
            delta_pp: 0.0,
            agreement: 1.0,
            within,
            delta_no_wrap_pp: 0.0,
            within_no_wrap: within,
        }
    }

    #[test]
    fn descent_stops_where_accuracy_leaves_or_the_rewrite_refuses() {
        let ok = |t: &Trial| t.within;
        // Holds down to 30, misses at 29.
        let (n, _) = smallest(34, 12, None, &ok, &mut |n| {
            Ok(Attempt::Ran(trial(n, n >= 30)))
        })
        .unwrap();
        assert_eq!(n, 30);
        // The rewrite refuses 31: 32 is the answer, and the note says why.
        let (n, how) = smallest(34, 12, None, &ok, &mut |n| {
            Ok(if n <= 31 {
                Attempt::Unbuildable("shift must stay below n".into())
            } else {
                Attempt::Ran(trial(n, true))
            })
        })
        .unwrap();
        assert_eq!(n, 32);
        assert!(
            how.contains("cannot be built (shift must stay below n)"),
            "{how}"
        );
    }

    #[test]
    fn a_failing_evaluation_is_an_error_not_cannot_be_built() {
        let ok = |t: &Trial| t.within;
        let err = smallest(34, 12, None, &ok, &mut |n| {
            if n == 33 {
                anyhow::bail!("tract cannot type the graph")
            }
            Ok(Attempt::Ran(trial(n, true)))
        })
        .unwrap_err();
        assert!(err.to_string().contains("tract cannot type"), "{err}");
    }

    #[test]
    fn the_widest_node_sets_the_prediction() {
        let recorded: BTreeMap<String, NodeStats> = [
            ("a".to_string(), node(3.0, None)),
            // 2f product of 100: needs 7 + 1 + 24 = 32 bits; its f output 10 needs 17.
            ("b".to_string(), node(10.0, Some(100.0))),
            ("c".to_string(), node(1000.0, None)),
        ]
        .into();
        assert_eq!(
            predicted_bits(&recorded, 12),
            (32, Some(("b".to_string(), "2f")))
        );
        let only_f: BTreeMap<String, NodeStats> = [("c".to_string(), node(1000.0, None))].into();
        // 1000 at f = 12 is q = 4096000 < 2^22: 23 bits.
        assert_eq!(
            predicted_bits(&only_f, 12),
            (23, Some(("c".to_string(), "f")))
        );
        assert_eq!(predicted_bits(&BTreeMap::new(), 12), (13, None));
        // A SIGMA LayerNorm whose sum of squares needs 40 bits binds "internal".
        let ln = NodeStats {
            max_abs: 200.0,
            internal_bits: Some(40),
            ..Default::default()
        };
        let with_ln: BTreeMap<String, NodeStats> = [
            ("c".to_string(), node(1000.0, None)),
            ("ln".to_string(), ln),
        ]
        .into();
        assert_eq!(
            predicted_bits(&with_ln, 12),
            (40, Some(("ln".to_string(), "internal")))
        );
    }
}
