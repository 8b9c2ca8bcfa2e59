//! The SUF operator description as data (SPEC.md section 2, REFERENCES.md section 1).
//!
//! A nonlinear function on an integer input is an interval partition of the input domain
//! with one polynomial per interval (degree 0 = a lookup-table entry) plus optional
//! predicate bits. Shipping these as files (`compiler/approx/*.json`) lets a user add or
//! swap an approximation without touching code; `tables.rs` regenerates SIGMA's own.

use crate::json_layout;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The only format this crate reads and writes; bump it when the meaning of a field changes.
pub const FORMAT: &str = "suf-descriptor/1";

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DescriptorError {
    #[error("descriptor is not valid JSON for format {FORMAT}: {0}")]
    Json(String),
    #[error("descriptor `{name}`: field `{field}`: {problem}")]
    Invalid {
        name: String,
        field: &'static str,
        problem: String,
    },
}

/// The integer inputs a descriptor accepts; anything outside is clamped to it first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputDomain {
    /// The input integer stands for `x / 2^scale_bits` (0 for codes such as a table index).
    pub scale_bits: u32,
    /// Inclusive bounds.
    pub min: i64,
    pub max: i64,
}

/// A bit computed alongside the value (e.g. the sign bit a protocol needs for a mux).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Predicate {
    /// [x < 0]: the most significant bit of the two's-complement input.
    Msb,
    /// [x < beta].
    Lt { beta: i64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorMetric {
    /// |approx - exact|.
    Abs,
    /// |approx - exact| / |exact|.
    Rel,
}

/// How far the decoded output may be from the exact function, as measured by the generator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBound {
    pub metric: ErrorMetric,
    /// Real (decoded) input interval the bound holds over, inclusive.
    pub over: [f64; 2],
    /// The stated bound: the measured maximum rounded up to two significant digits.
    pub max: f64,
    /// The exact function the error is measured against.
    pub reference: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Descriptor {
    pub format: String,
    pub name: String,
    pub version: u32,
    /// Human-readable formula.
    pub function: String,
    /// Where the algorithm comes from (REFERENCES.md section, SIGMA source file).
    pub source: String,
    /// The command that regenerates this file.
    pub generator: String,
    /// Named integer parameters the function was built for (e.g. `C` for rsqrt);
    /// consumers check them against their own inputs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, i64>,
    pub input: InputDomain,
    pub output_scale_bits: u32,
    /// Ascending interval starts; `cuts[0] == input.min`; interval i is [cuts[i], cuts[i+1]).
    pub cuts: Vec<i64>,
    /// Coefficients c0, c1, ... of y = sum c_k x^k (wrapping i64 arithmetic), one per cut.
    pub polys: Vec<Vec<i64>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub predicates: Vec<Predicate>,
    pub error: ErrorBound,
}

/// The largest scale a descriptor may declare: 2^scale must stay exact in f64 and i64.
const MAX_SCALE_BITS: u32 = 62;

impl Descriptor {
    /// Parses and validates a descriptor file's text.
    pub fn from_json(text: &str) -> Result<Self, DescriptorError> {
        let d: Descriptor =
            serde_json::from_str(text).map_err(|e| DescriptorError::Json(e.to_string()))?;
        d.validate()?;
        Ok(d)
    }

    /// The file text: pretty JSON with every number array on as few lines as is readable.
    pub fn to_json_pretty(&self) -> String {
        let value = serde_json::to_value(self).expect("a descriptor always serialises");
        json_layout::pretty(&value)
    }

    /// Checks every structural invariant `eval` relies on.
    pub fn validate(&self) -> Result<(), DescriptorError> {
        let bad = |field: &'static str, problem: String| DescriptorError::Invalid {
            name: self.name.clone(),
            field,
            problem,
        };
        if self.format != FORMAT {
            return Err(bad(
                "format",
                format!("is `{}`, this reader understands `{FORMAT}`", self.format),
            ));
        }
        if self.name.trim().is_empty() {
            return Err(bad("name", "is empty".into()));
        }
        if self.input.min > self.input.max {
            return Err(bad(
                "input",
                format!("min {} > max {}", self.input.min, self.input.max),
            ));
        }
        if self.input.scale_bits > MAX_SCALE_BITS || self.output_scale_bits > MAX_SCALE_BITS {
            return Err(bad(
                "input.scale_bits/output_scale_bits",
                format!("must be <= {MAX_SCALE_BITS}"),
            ));
        }
        let Some(&first) = self.cuts.first() else {
            return Err(bad("cuts", "is empty: need at least one interval".into()));
        };
        if first != self.input.min {
            return Err(bad(
                "cuts",
                format!(
                    "cuts[0] = {first} must equal input.min = {}",
                    self.input.min
                ),
            ));
        }
        if let Some(i) = self.cuts.windows(2).position(|w| w[0] >= w[1]) {
            return Err(bad(
                "cuts",
                format!(
                    "not strictly ascending: cuts[{i}] = {} >= cuts[{}] = {}",
                    self.cuts[i],
                    i + 1,
                    self.cuts[i + 1]
                ),
            ));
        }
        if let Some(&last) = self.cuts.last() {
            if last > self.input.max {
                return Err(bad(
                    "cuts",
                    format!("last cut {last} is above input.max = {}", self.input.max),
                ));
            }
        }
        if self.polys.len() != self.cuts.len() {
            return Err(bad(
                "polys",
                format!(
                    "has {} polynomials for {} cuts (need one per interval)",
                    self.polys.len(),
                    self.cuts.len()
                ),
            ));
        }
        if let Some(i) = self.polys.iter().position(Vec::is_empty) {
            return Err(bad(
                "polys",
                format!("polys[{i}] is empty: a constant is written [c0]"),
            ));
        }
        let [lo, hi] = self.error.over;
        if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
            return Err(bad(
                "error.over",
                format!("[{lo}, {hi}] is not a finite interval"),
            ));
        }
        if !(self.error.max.is_finite() && self.error.max >= 0.0) {
            return Err(bad(
                "error.max",
                format!("{} is not a finite non-negative bound", self.error.max),
            ));
        }
        Ok(())
    }

    /// The input clamped to the domain.
    #[inline]
    pub fn clamp(&self, x: i64) -> i64 {
        x.clamp(self.input.min, self.input.max)
    }

    /// Index of the interval holding `x` (after clamping).
    #[inline]
    pub fn piece(&self, x: i64) -> usize {
        let x = self.clamp(x);
        // Cuts are interval starts: the last cut <= x. cuts[0] == min <= x, so i >= 1.
        self.cuts.partition_point(|&c| c <= x) - 1
    }

    /// y = poly(x) on x's interval, in wrapping i64 arithmetic (the caller wraps to n bits).
    #[inline]
    pub fn eval(&self, x: i64) -> i64 {
        let x = self.clamp(x);
        let poly = &self.polys[self.piece(x)];
        poly.iter()
            .rev()
            .fold(0i64, |acc, &c| acc.wrapping_mul(x).wrapping_add(c))
    }

    /// The predicate bits, in declaration order, on the clamped input.
    pub fn eval_bits(&self, x: i64) -> Vec<bool> {
        let x = self.clamp(x);
        self.predicates
            .iter()
            .map(|p| match *p {
                Predicate::Msb => x < 0,
                Predicate::Lt { beta } => x < beta,
            })
            .collect()
    }

    /// Merges neighbouring intervals with identical polynomials (same function, fewer cuts).
    pub fn merge_equal_pieces(&mut self) {
        let mut cuts = Vec::with_capacity(self.cuts.len());
        let mut polys: Vec<Vec<i64>> = Vec::with_capacity(self.polys.len());
        for (&c, p) in self.cuts.iter().zip(&self.polys) {
            if polys.last() != Some(p) {
                cuts.push(c);
                polys.push(p.clone());
            }
        }
        self.cuts = cuts;
        self.polys = polys;
    }
}

#[cfg(test)]
#[path = "descriptor_tests.rs"]
mod tests;
