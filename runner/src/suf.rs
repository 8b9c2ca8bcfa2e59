//! The bridge to the compiler library: loading models, the tract framework that knows the SUF
//! ops, and the in-process rewrite of a graph for one emulation level.

use std::path::Path;

use anyhow::{anyhow, Result};
use suf_compiler::{CompileOptions, Emulation, FixedPoint};
use tract_onnx::pb::ModelProto;

/// Emulation levels of SPEC section 2, in the order reports list them.
pub const LEVELS: [Emulation; 3] = [Emulation::Output, Emulation::Ring, Emulation::Sigma];

/// A level named on the command line or in a config.
pub fn parse_level(name: &str) -> Result<Emulation> {
    name.parse::<Emulation>().map_err(|_| {
        let names: Vec<&str> = LEVELS.iter().map(|l| l.as_str()).collect();
        anyhow!(
            "unknown emulation level \"{name}\" (expected one of {})",
            names.join(", ")
        )
    })
}

/// Reads an ONNX model, external data included. A model suf already rewrote is refused: it
/// would be quantized twice and its output called the float baseline.
pub fn load_model(path: &Path) -> Result<ModelProto> {
    let model = suf_compiler::load_model(path)?;
    suf_compiler::rewritten::refuse(&model, &path.display().to_string())?;
    Ok(model)
}

/// tract's ONNX framework with the SUF custom ops registered (a superset of the plain one).
pub fn framework() -> tract_onnx::Onnx {
    suf_compiler::tract_ops::onnx().with_ignore_value_info(true)
}

/// Rewrites `model` for one emulation level, in process.
pub fn compile(
    model: &ModelProto,
    n_bits: u32,
    frac_bits: u32,
    level: Emulation,
) -> Result<ModelProto> {
    let fixed = FixedPoint::new(n_bits, frac_bits)?;
    let mut opts = CompileOptions::new(fixed);
    opts.emulation = level;
    Ok(suf_compiler::compile(model, &opts)?.model)
}

/// The float graph as the runner executes it: the compiler's exact clean-ups applied
/// (stale value_info dropped, Identity/Dropout removed, Pow(x, 2|3) as products, which is
/// how PyTorch computes them), so that float and SUF graphs share their fast kernels.
pub fn normalized(model: &ModelProto) -> ModelProto {
    let mut m = model.clone();
    if let Some(g) = m.graph.as_mut() {
        suf_compiler::normalize::normalize(g);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_by_name_and_an_unknown_one_names_the_choices() {
        for level in LEVELS {
            assert_eq!(parse_level(level.as_str()).unwrap(), level);
        }
        let e = parse_level("rign").unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown emulation level \"rign\" (expected one of output, ring, sigma)"
        );
    }
}
