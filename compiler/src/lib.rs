//! suf's compiler: reads ONNX models, matches transformer ops, inserts fixed-point SUF nodes.

pub mod cli;
