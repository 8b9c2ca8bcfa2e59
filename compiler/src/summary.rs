//! What a compilation did, for people (Display) and tools (Serialize).

use crate::patterns::{OpKind, Untouched};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub n_bits: u32,
    pub frac_bits: u32,
    pub rounding: String,
    pub emulation: String,
    pub lowered: bool,
    /// SUF nodes inserted, per op kind.
    pub inserted: BTreeMap<OpKind, usize>,
    /// How the sites were recognised ("gelu: erf pattern" -> count).
    pub forms: BTreeMap<String, usize>,
    /// Float initializers rewritten to fixed-point values.
    pub initializers_rewritten: usize,
    /// Matchable ops left without a SUF node, with the reason.
    pub untouched: Vec<Untouched>,
    /// Graph clean-ups applied before matching.
    pub normalizations: Vec<String>,
    /// MatMul + bias-Add encodings fused into one `SufQuantizeBias` node each (same values).
    pub fused_bias_nodes: usize,
    /// Levels ring and sigma: how ring values travel between SUF nodes.
    pub transport: Option<crate::transport::TransportReport>,
}

impl Summary {
    pub fn total_inserted(&self) -> usize {
        self.inserted.values().sum()
    }

    pub fn count(&self, kind: OpKind) -> usize {
        self.inserted.get(&kind).copied().unwrap_or(0)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "inserted {} SUF nodes (n_bits={}, frac_bits={}, rounding={}, emulation={}{})",
            self.total_inserted(),
            self.n_bits,
            self.frac_bits,
            self.rounding,
            self.emulation,
            if self.lowered {
                ", lowered to standard ONNX ops"
            } else {
                ""
            }
        )?;
        for (kind, count) in &self.inserted {
            writeln!(f, "  {:<10} {count:>5}", kind.as_str())?;
        }
        for (form, count) in &self.forms {
            writeln!(f, "    {form}: {count}")?;
        }
        if self.transport.is_some() {
            writeln!(
                f,
                "parameters stay float in the initializers: every SUF op encodes its own, exactly"
            )?;
        } else {
            writeln!(
                f,
                "rewrote {} initializers to the 2^-{} grid",
                self.initializers_rewritten, self.frac_bits
            )?;
        }
        if let Some(t) = &self.transport {
            writeln!(f, "ring values travel between SUF nodes as i64 tensors:")?;
            for (what, count) in &t.rewritten {
                writeln!(f, "  {count:>5} {what}")?;
            }
            if t.masked_softmax > 0 {
                writeln!(
                    f,
                    "  {:>5} softmax nodes take the attention mask as a float bias",
                    t.masked_softmax
                )?;
            }
            let mut islands: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for i in &t.float_islands {
                islands.entry(&i.op).or_default().push(&i.node);
            }
            if islands.is_empty() {
                writeln!(
                    f,
                    "  no float islands: no op of the model computes on decoded ring values"
                )?;
            }
            for (op, nodes) in islands {
                writeln!(
                    f,
                    "  {:>5} {op:<8} float island (decoded exactly or an error): {}",
                    nodes.len(),
                    first_few(&nodes)
                )?;
            }
        }
        let mut by_reason: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
        for u in &self.untouched {
            by_reason
                .entry((&u.op, &u.reason))
                .or_default()
                .push(&u.node);
        }
        if !by_reason.is_empty() {
            writeln!(f, "left untouched:")?;
        }
        for ((op, reason), nodes) in by_reason {
            writeln!(
                f,
                "  {:>4} {op:<8} {reason}: {}",
                nodes.len(),
                first_few(&nodes)
            )?;
        }
        if self.fused_bias_nodes > 0 {
            writeln!(
                f,
                "fused {} MatMul -> SufQuantize -> Add(bias) -> SufQuantize chains into SufQuantizeBias nodes (one pass, same values)",
                self.fused_bias_nodes
            )?;
        }
        for n in &self.normalizations {
            writeln!(f, "normalised: {n}")?;
        }
        Ok(())
    }
}

/// The first four node names and how many more there are.
fn first_few(nodes: &[&str]) -> String {
    let shown = nodes[..nodes.len().min(4)].join(", ");
    if nodes.len() > 4 {
        format!("{shown}, ... ({} more)", nodes.len() - 4)
    } else {
        shown
    }
}
