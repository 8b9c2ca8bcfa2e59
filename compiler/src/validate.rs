//! Structural checks of a loaded graph, so that a malformed file is an error naming the node
//! or tensor instead of a panic deep in the pass: ops the pass rewrites have the inputs and
//! outputs ONNX requires, every tensor read is produced somewhere and produced once, and
//! initializers hold as many elements as their dims say.

use anyhow::{bail, Result};
use std::collections::HashSet;
use tract_onnx::pb::{GraphProto, TensorProto};

/// Required (non-empty) leading inputs of the ops the matcher and the pass look into.
pub(crate) fn required_inputs(op: &str) -> usize {
    match op {
        "Where" => 3,
        "MatMul"
        | "Gemm"
        | "Add"
        | "Sub"
        | "Mul"
        | "Div"
        | "Pow"
        | "Gather"
        | "Reshape"
        | "Expand"
        | "Equal"
        | "Less"
        | "Greater"
        | "LayerNormalization"
        | "SimplifiedLayerNormalization"
        | "RMSNormalization" => 2,
        "Softmax" | "Erf" | "Tanh" | "Sqrt" | "Sigmoid" | "Gelu" | "ReduceMean" | "Transpose"
        | "Cast" | "Identity" | "Dropout" | "Neg" | "Reciprocal" | "Relu" | "Concat"
        | "Unsqueeze" | "Squeeze" | "Shape" | "Slice" => 1,
        _ => 0,
    }
}

/// Bytes per element of a tensor's `raw_data` (None: not checked, e.g. packed 4-bit).
fn element_bytes(data_type: i32) -> Option<Option<usize>> {
    Some(match data_type {
        2 | 3 | 9 | 17..=20 => Some(1),
        4 | 5 | 10 | 16 => Some(2),
        1 | 6 | 12 => Some(4),
        7 | 11 | 13 | 14 => Some(8),
        15 => Some(16),
        8 | 21 | 22 => None,
        _ => return None,
    })
}

fn check_tensor(t: &TensorProto, what: &str) -> Result<()> {
    let Some(size) = element_bytes(t.data_type) else {
        bail!("{what} {}: unknown data type {}", t.name, t.data_type);
    };
    let mut count: u64 = 1;
    for &d in &t.dims {
        if d < 0 {
            bail!("{what} {}: negative dimension {d} in {:?}", t.name, t.dims);
        }
        count = count
            .checked_mul(d as u64)
            .filter(|&c| c <= 1 << 40)
            .ok_or_else(|| anyhow::anyhow!("{what} {}: dims {:?} are too large", t.name, t.dims))?;
    }
    let stored = if !t.raw_data.is_empty() {
        size.map(|s| (t.raw_data.len() / s) as u64 + u64::from(!t.raw_data.len().is_multiple_of(s)))
    } else {
        let typed = [
            t.float_data.len(),
            t.int32_data.len(),
            t.int64_data.len(),
            t.double_data.len(),
            t.uint64_data.len(),
            t.string_data.len(),
        ];
        typed.iter().copied().find(|&n| n > 0).map(|n| n as u64)
    };
    // Complex values take two typed entries each; external data is resolved before this.
    if let Some(stored) = stored.filter(|_| !matches!(t.data_type, 14 | 15)) {
        if stored != count {
            bail!(
                "{what} {}: dims {:?} need {count} elements, the tensor holds {stored}",
                t.name,
                t.dims
            );
        }
    }
    Ok(())
}

/// The checks above, over the top-level graph (subgraphs are tract's to check).
pub fn check_graph(g: &GraphProto) -> Result<()> {
    let mut known: HashSet<&str> = g.input.iter().map(|v| v.name.as_str()).collect();
    for t in &g.initializer {
        check_tensor(t, "initializer")?;
        known.insert(t.name.as_str());
    }
    let mut produced: HashSet<&str> = HashSet::new();
    for n in &g.node {
        let label = if n.name.is_empty() {
            &n.op_type
        } else {
            &n.name
        };
        if n.output.iter().all(|o| o.is_empty()) {
            bail!("node {label} ({}) has no output", n.op_type);
        }
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            if !produced.insert(o.as_str()) || known.contains(o.as_str()) {
                bail!("tensor {o} is produced more than once (again by node {label})");
            }
        }
        let need = required_inputs(&n.op_type);
        if n.input.len() < need || n.input[..need].iter().any(|i| i.is_empty()) {
            bail!(
                "node {label} ({}) needs {need} inputs, has {:?}",
                n.op_type,
                n.input
            );
        }
        // No tensor has more than a few dozen axes; tract's shape inference loops up to an
        // axis attribute's value (found by the fuzz campaign: LayerNormalization with
        // axis = 2^62 hung type inference), so a huge one is refused here.
        for a in n
            .attribute
            .iter()
            .filter(|a| a.name == "axis" || a.name == "axes")
        {
            if let Some(v) = std::iter::once(a.i)
                .chain(a.ints.iter().copied())
                .find(|v| v.unsigned_abs() > MAX_RANK)
            {
                bail!(
                    "node {label} ({}) has {} = {v}: no tensor has that many axes",
                    n.op_type,
                    a.name
                );
            }
        }
        if n.op_type == "Constant" {
            for a in &n.attribute {
                if let Some(t) = &a.t {
                    check_tensor(t, "constant")?;
                }
            }
        }
    }
    for n in &g.node {
        for i in n.input.iter().filter(|i| !i.is_empty()) {
            if !known.contains(i.as_str()) && !produced.contains(i.as_str()) {
                bail!("node {} reads tensor {i}, which nothing produces", n.name);
            }
        }
    }
    for o in &g.output {
        if !known.contains(o.name.as_str()) && !produced.contains(o.name.as_str()) {
            bail!("graph output {} is produced by no node", o.name);
        }
    }
    if g.output.is_empty() {
        bail!("the graph has no outputs");
    }
    // Axes outside their tensor's rank (tract's rules wrap a negative one and can loop).
    crate::ranks::check_axes(g, &[])
}

/// The largest |axis| an attribute may name.
const MAX_RANK: u64 = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::GraphBuilder;

    fn model() -> tract_onnx::pb::ModelProto {
        let mut b = GraphBuilder::new("g");
        b.input_f32("x", &[2, 3]);
        b.init_f32("w", &[3, 2], &[0.5; 6]);
        b.node("MatMul", &["x", "w"], &["y"]);
        b.output("y");
        b.build()
    }

    fn err(edit: impl FnOnce(&mut GraphProto)) -> String {
        let mut m = model();
        edit(m.graph.as_mut().unwrap());
        format!("{:#}", check_graph(m.graph.as_ref().unwrap()).unwrap_err())
    }

    #[test]
    fn a_well_formed_graph_passes() {
        check_graph(model().graph.as_ref().unwrap()).unwrap();
    }

    #[test]
    fn malformed_graphs_are_errors_naming_what_is_wrong() {
        assert!(err(|g| {
            g.node[0].input.pop();
        })
        .contains("needs 2 inputs"));
        assert!(err(|g| g.node[0].output.clear()).contains("has no output"));
        assert!(err(|g| g.node[0].input[1] = "nope".into()).contains("nothing produces"));
        assert!(err(|g| g.initializer[0].dims = vec![3, 3]).contains("need 9 elements"));
        assert!(err(|g| g.initializer[0].dims = vec![-1]).contains("negative"));
        assert!(err(|g| g.initializer[0].data_type = 0).contains("unknown data type"));
        assert!(err(|g| g.output[0].name = "z".into()).contains("produced by no node"));
        assert!(err(|g| {
            let n = g.node[0].clone();
            g.node.push(n);
        })
        .contains("more than once"));
    }
}
