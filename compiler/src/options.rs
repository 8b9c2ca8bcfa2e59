//! What a compilation is asked to do: the ring, the rounding, the emulation level, which
//! op kinds get SUF nodes.

use crate::patterns::OpKind;
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use suf_fixed::{FixedPoint, Rounding};

/// How faithfully SUF nodes emulate the secure computation (SPEC.md section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Emulation {
    #[default]
    /// Ops in float, every matched op's output encoded and wrapped (FuseFSS's emulation).
    Output,
    /// Products at scale 2f wrapped in the ring, then floor-truncated.
    Ring,
    /// `ring` plus SIGMA's own nonlinear approximations.
    Sigma,
}

impl Emulation {
    /// True for the levels whose SUF nodes carry ring values as i64 tensors.
    pub fn carries_ring(self) -> bool {
        self != Emulation::Output
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Emulation::Output => "output",
            Emulation::Ring => "ring",
            Emulation::Sigma => "sigma",
        }
    }
}

impl fmt::Display for Emulation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Emulation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "output" => Ok(Emulation::Output),
            "ring" => Ok(Emulation::Ring),
            "sigma" => Ok(Emulation::Sigma),
            _ => Err(format!(
                "unknown emulation level `{s}` (expected output, ring or sigma)"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CompileOptions {
    pub fixed: FixedPoint,
    pub rounding: Rounding,
    pub emulation: Emulation,
    /// Only these op kinds get SUF nodes (None: all).
    pub only: Option<BTreeSet<OpKind>>,
    pub skip: BTreeSet<OpKind>,
    /// Emit standard ONNX ops instead of custom SUF nodes.
    pub lower: bool,
}

impl CompileOptions {
    pub fn new(fixed: FixedPoint) -> Self {
        CompileOptions {
            fixed,
            rounding: Rounding::Round,
            emulation: Emulation::Output,
            only: None,
            skip: BTreeSet::new(),
            lower: false,
        }
    }
}
