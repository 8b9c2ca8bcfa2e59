//! `--lower`: SUF nodes replaced by standard ONNX ops, so any ONNX runtime can run the model.
//!
//! The ring value is computed in float64, exact while |x * 2^f| < 2^52 and n <= 53:
//! `q = R(x * 2^f)`, `w = q - 2^n * floor((q + 2^(n-1)) / 2^n)`, `y = w * 2^-f`.
//! Round-half-to-even uses the magic-number trick `(v + 1.5*2^52) - 1.5*2^52` (exact IEEE
//! addition) instead of the `Round` op, which tract does not implement for f64.

use crate::arity;
use crate::builder::attr_int;
use crate::tensor::{dtype, f64_scalar};
use crate::{SUF_DOMAIN, SUF_QUANTIZE};
use anyhow::{anyhow, Context, Result};
use suf_fixed::{pow2, Rounding};
use tract_onnx::pb::{GraphProto, ModelProto, NodeProto};

pub const MAX_LOWERED_N_BITS: u32 = 53;
const MAGIC: f64 = 6755399441055744.0; // 1.5 * 2^52

pub fn lower(model: &mut ModelProto) -> Result<()> {
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| anyhow!("model has no graph"))?;
    let mut i = 0;
    while i < graph.node.len() {
        if graph.node[i].op_type == SUF_QUANTIZE && graph.node[i].domain == SUF_DOMAIN {
            let node = graph.node.remove(i);
            let nodes = expand_node(graph, &node)?;
            let n = nodes.len();
            graph.node.splice(i..i, nodes);
            i += n;
        } else {
            i += 1;
        }
    }
    model.opset_import.retain(|o| o.domain != SUF_DOMAIN);
    Ok(())
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Result<&'a tract_onnx::pb::AttributeProto> {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .with_context(|| format!("SUF node {}: missing attribute {name}", node.name))
}

fn expand_node(graph: &mut GraphProto, node: &NodeProto) -> Result<Vec<NodeProto>> {
    // SufQuantize nodes may come from the input model as well as from the pass.
    let (input, output) = (arity::input(node, 0)?, arity::output(node, 0)?);
    let n_bits = attr(node, "n_bits")?.i as i32;
    let frac_bits = attr(node, "frac_bits")?.i as i32;
    let rounding: Rounding = String::from_utf8_lossy(&attr(node, "rounding")?.s)
        .parse()
        .map_err(|e| anyhow!("SUF node {}: {e}", node.name))?;
    let p = &node.name;
    let t = |s: &str| format!("{p}/{s}");
    let mut consts = |name: &str, v: f64| {
        let full = t(name);
        if !graph.initializer.iter().any(|i| i.name == full) {
            graph.initializer.push(f64_scalar(&full, v));
        }
        full
    };
    let scale = consts("scale", pow2(frac_bits));
    let inv_scale = consts("inv_scale", pow2(-frac_bits));
    let half_ring = consts("half_ring", pow2(n_bits - 1));
    let ring = consts("ring", pow2(n_bits));
    let magic = consts("magic", MAGIC);
    let mut out: Vec<NodeProto> = vec![];
    let mut op = |ty: &str, inputs: &[&str], output: &str, attribute| {
        out.push(NodeProto {
            name: t(&format!("{output}_op")),
            op_type: ty.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![t(output)],
            attribute,
            ..Default::default()
        });
        t(output)
    };
    let x = op(
        "Cast",
        &[input],
        "x64",
        vec![attr_int("to", dtype::DOUBLE as i64)],
    );
    let v = op("Mul", &[&x, &scale], "scaled", vec![]);
    let q = match rounding {
        Rounding::Round => {
            let shifted = op("Add", &[&v, &magic], "shifted", vec![]);
            op("Sub", &[&shifted, &magic], "rounded", vec![])
        }
        Rounding::Floor => op("Floor", &[&v], "rounded", vec![]),
        Rounding::Trunc => {
            let a = op("Abs", &[&v], "abs", vec![]);
            let f = op("Floor", &[&a], "abs_floor", vec![]);
            let s = op("Sign", &[&v], "sign", vec![]);
            op("Mul", &[&f, &s], "rounded", vec![])
        }
    };
    let shifted = op("Add", &[&q, &half_ring], "offset", vec![]);
    let turns = op("Div", &[&shifted, &ring], "turns", vec![]);
    let whole = op("Floor", &[&turns], "whole_turns", vec![]);
    let back = op("Mul", &[&whole, &ring], "wrapped_away", vec![]);
    let w = op("Sub", &[&q, &back], "wrapped", vec![]);
    let y = op("Mul", &[&w, &inv_scale], "decoded", vec![]);
    op(
        "Cast",
        &[&y],
        "y32",
        vec![attr_int("to", dtype::FLOAT as i64)],
    );
    out.last_mut().expect("pushed").output = vec![output.to_string()];
    Ok(out)
}
