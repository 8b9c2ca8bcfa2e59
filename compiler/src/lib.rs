//! suf's compiler: reads ONNX models, matches transformer ops as whole patterns, and inserts
//! fixed-point SUF nodes after each (SPEC.md section 2), rewriting weights to the grid.
//!
//! The pipeline is `onnx_io::load_model` -> `pass::compile` (normalize, match, insert) ->
//! `onnx_io::save_model`, with `lower` for standard-ONNX output, `dump` for readable
//! graphs and `tract_ops` to execute SUF nodes in tract.

pub mod approx;
pub mod arity;
pub mod builder;
pub mod cli;
pub mod dump;
pub mod fuse;
pub mod graph;
pub mod logit_positions;
pub mod lower;
pub mod normalize;
pub mod onnx_io;
pub mod options;
pub mod outpath;
pub mod panic_guard;
pub mod pass;
pub mod patterns;
pub mod ranks;
pub mod rewritten;
pub mod ring;
pub mod sigma;
pub mod stats;
pub mod summary;
pub mod tensor;
pub mod tract_ops;
pub mod transport;
pub mod validate;

pub use onnx_io::{load_model, load_model_bytes, save_model};
pub use options::{CompileOptions, Emulation};
pub use pass::{compile, Compiled};
pub use patterns::OpKind;
pub use suf_fixed::{FixedPoint, Rounding};
pub use summary::Summary;
pub use tract_onnx::pb::ModelProto;

/// The custom-op domain of inserted nodes.
pub const SUF_DOMAIN: &str = "ai.suf";
/// Op type of the fused encode + wrap node (unique name: tract's registry ignores domains).
pub const SUF_QUANTIZE: &str = "SufQuantize";
/// Op type of q(q(x) + bias): a linear layer's two encodings fused into one pass (level output).
pub const SUF_QUANTIZE_BIAS: &str = "SufQuantizeBias";
/// Op type of the ring-exact matrix product (emulation levels `ring` and `sigma`).
pub const SUF_RING_MATMUL: &str = "SufRingMatMul";
/// Op type of SIGMA's table-driven GELU/SiLU (emulation level `sigma`).
pub const SUF_SIGMA_ACTIVATION: &str = "SufSigmaActivation";
/// Op type of SIGMA's row-wise Softmax/LayerNorm/RMSNorm (emulation level `sigma`).
pub const SUF_SIGMA_ROW: &str = "SufSigmaRow";
/// Op type of level `ring`'s float nonlinear functions of ring values (f64, re-encoded).
pub const SUF_RING_FUNCTION: &str = "SufRingFunction";
/// Op type of the encoding of a float tensor into an i64 ring tensor (levels ring, sigma).
pub const SUF_ENCODE: &str = "SufEncode";
/// Op type of the exactness-checked decoding of a ring tensor to f32 (float islands,
/// graph outputs).
pub const SUF_RING_DECODE: &str = "SufRingDecode";
/// Op type of Wrap_n(a +- b) on ring tensors.
pub const SUF_RING_ADD: &str = "SufRingAdd";
/// Op type of Ars(Wrap_n(a * b), f): an elementwise product in the ring.
pub const SUF_RING_MUL: &str = "SufRingMul";
