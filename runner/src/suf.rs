//! The bridge to the compiler library: loading models, the tract framework that knows the SUF
//! ops, and the in-process rewrite of a graph for one emulation level.

use std::path::Path;

use anyhow::{bail, Result};
use tract_onnx::pb::ModelProto;

/// Emulation levels of SPEC section 2, in the order reports list them.
pub const LEVELS: [&str; 3] = ["output", "ring", "sigma"];

pub fn load_model(path: &Path) -> Result<ModelProto> {
    crate::engine::read_proto(path)
}

pub fn framework() -> tract_onnx::Onnx {
    tract_onnx::onnx().with_ignore_value_info(true)
}

pub fn compile(
    _model: &ModelProto,
    _n_bits: u32,
    _frac_bits: u32,
    level: &str,
) -> Result<ModelProto> {
    bail!("SUF compiler for level \"{level}\" is not wired in yet")
}
