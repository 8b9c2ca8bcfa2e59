//! Ranks of a graph's tensors, as far as they follow from declared inputs, initializers and
//! constants through the common ops, and the check that every axis an attribute (or a
//! constant axes input) names exists in the tensor it applies to.
//!
//! tract resolves a negative axis as `(axis + rank) as usize` in many ops' type rules; an
//! axis below -rank wraps to a huge index and some rules then loop up to it (found by the
//! fuzz campaign: LayerNormalization with axis -5 on a rank-3 tensor hung type inference).
//! ONNX allows only `-rank <= axis < rank`, so such a model is refused here, with the node's
//! name, before tract sees it. Where a rank cannot be derived (ops not modelled below,
//! shapes computed at run time) nothing is checked: unknown is never an error.

use anyhow::{bail, Result};
use std::collections::HashMap;
use tract_onnx::pb::{type_proto, AttributeProto, GraphProto, NodeProto, TensorProto};

/// What is known of one tensor.
#[derive(Clone, Debug, Default, PartialEq)]
struct Known {
    rank: Option<usize>,
    /// Element count of a rank-1 tensor (a shape or an axes list).
    len: Option<usize>,
    /// The values of a small integer constant (axes, shapes).
    ints: Option<Vec<i64>>,
}

impl Known {
    fn rank(r: usize) -> Self {
        Known {
            rank: Some(r),
            ..Default::default()
        }
    }
    fn vector(len: Option<usize>) -> Self {
        Known {
            rank: Some(1),
            len,
            ints: None,
        }
    }
}

/// Integer constants up to this many elements keep their values.
const SMALL: usize = 64;

fn tensor_known(t: &TensorProto) -> Known {
    let rank = t.dims.len();
    let count: Option<usize> = t.dims.iter().try_fold(1usize, |a, &d| {
        usize::try_from(d).ok().and_then(|d| a.checked_mul(d))
    });
    let ints = match t.data_type {
        7 if !t.raw_data.is_empty() => Some(
            t.raw_data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect::<Vec<_>>(),
        ),
        7 => Some(t.int64_data.clone()),
        6 if !t.raw_data.is_empty() => Some(
            t.raw_data
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64)
                .collect(),
        ),
        6 => Some(t.int32_data.iter().map(|&v| v as i64).collect()),
        _ => None,
    }
    .filter(|v| v.len() <= SMALL && Some(v.len()) == count);
    Known {
        rank: Some(rank),
        len: if rank == 1 { count } else { None },
        ints,
    }
}

fn constant_known(n: &NodeProto) -> Known {
    for a in &n.attribute {
        match a.name.as_str() {
            "value" => {
                if let Some(t) = &a.t {
                    return tensor_known(t);
                }
            }
            "value_float" => return Known::rank(0),
            "value_int" => {
                return Known {
                    rank: Some(0),
                    len: None,
                    ints: Some(vec![a.i]),
                }
            }
            "value_floats" => return Known::vector(Some(a.floats.len())),
            "value_ints" => {
                return Known {
                    rank: Some(1),
                    len: Some(a.ints.len()),
                    ints: Some(a.ints.clone()).filter(|v| v.len() <= SMALL),
                }
            }
            _ => {}
        }
    }
    Known::default()
}

fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

fn attr_i(n: &NodeProto, name: &str) -> Option<i64> {
    attr(n, name).map(|a| a.i)
}

fn broadcast(ranks: &[Option<usize>]) -> Option<usize> {
    ranks.iter().try_fold(0, |m, r| r.map(|r| m.max(r)))
}

/// The axes of an op that takes them as an attribute (older opsets) or as input `ix`
/// (newer ones): None when absent or not a constant.
fn axes_of(n: &NodeProto, known: &HashMap<&str, Known>, ix: usize) -> Option<Vec<i64>> {
    if let Some(a) = attr(n, "axes") {
        return Some(a.ints.clone());
    }
    let name = n.input.get(ix).filter(|s| !s.is_empty())?;
    known.get(name.as_str())?.ints.clone()
}

/// How many axes an op adds or removes, when its axes input is a vector of known length.
fn axes_count(n: &NodeProto, known: &HashMap<&str, Known>, ix: usize) -> Option<usize> {
    if let Some(a) = attr(n, "axes") {
        return Some(a.ints.len());
    }
    let name = n.input.get(ix).filter(|s| !s.is_empty())?;
    let k = known.get(name.as_str())?;
    k.len.or(k.ints.as_ref().map(|v| v.len()))
}

const UNARY: &[&str] = &[
    "Identity",
    "Cast",
    "CastLike",
    "Neg",
    "Abs",
    "Relu",
    "LeakyRelu",
    "Elu",
    "Selu",
    "Sigmoid",
    "HardSigmoid",
    "Tanh",
    "Erf",
    "Sqrt",
    "Reciprocal",
    "Exp",
    "Log",
    "Floor",
    "Ceil",
    "Round",
    "Sign",
    "Not",
    "Sin",
    "Cos",
    "Softmax",
    "LogSoftmax",
    "Hardmax",
    "Gelu",
    "FastGelu",
    "Softplus",
    "IsNaN",
    "IsInf",
    "Clip",
    "Dropout",
    "LayerNormalization",
    "SimplifiedLayerNormalization",
    "RMSNormalization",
    "LpNormalization",
    "CumSum",
    "Transpose",
    "Slice",
    "Pad",
    "Tile",
    "Trilu",
    "TopK",
    "GatherElements",
    "ScatterElements",
    "ScatterND",
    "Split",
    "Compress",
];

const BROADCAST: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Equal",
    "Less",
    "Greater",
    "LessOrEqual",
    "GreaterOrEqual",
    "And",
    "Or",
    "Xor",
    "Max",
    "Min",
    "Mod",
    "Sum",
    "Mean",
    "Where",
    "BitShift",
    "PRelu",
];

/// The output ranks of `n` (one entry per output) from what is known of its inputs.
fn infer(n: &NodeProto, known: &HashMap<&str, Known>) -> Vec<Known> {
    let input = |i: usize| -> Known {
        n.input
            .get(i)
            .and_then(|s| known.get(s.as_str()))
            .cloned()
            .unwrap_or_default()
    };
    let rank = |i: usize| input(i).rank;
    let op = n.op_type.as_str();
    let first = if op == "Constant" {
        constant_known(n)
    } else if UNARY.contains(&op) || (op.starts_with("Suf") && !op.contains("RingMatMul")) {
        let k = input(0);
        match op {
            // Elementwise ops keep a shape vector's length; the others only the rank.
            "Identity" | "Cast" | "Neg" | "Abs" | "Clip" => Known { ints: None, ..k },
            "SufRingAdd" | "SufRingMul" => Known {
                rank: broadcast(&[rank(0), rank(1)]),
                ..Default::default()
            },
            _ => Known {
                rank: k.rank,
                ..Default::default()
            },
        }
    } else if BROADCAST.contains(&op) {
        let ks: Vec<Known> = (0..n.input.len()).map(input).collect();
        let r = broadcast(&ks.iter().map(|k| k.rank).collect::<Vec<_>>());
        let len = if r == Some(1) {
            // Lengths of the vector operands (scalars broadcast): equal, or 1 and another.
            let lens: Option<Vec<usize>> = ks
                .iter()
                .filter(|k| k.rank == Some(1))
                .map(|k| k.len)
                .collect();
            lens.and_then(|l| {
                let big = l.iter().copied().max()?;
                l.iter().all(|&x| x == big || x == 1).then_some(big)
            })
        } else {
            None
        };
        Known {
            rank: r,
            len,
            ints: None,
        }
    } else {
        match op {
            "MatMul" | "SufRingMatMul" => Known {
                rank: match (rank(0), rank(1)) {
                    (Some(1), Some(1)) => Some(0),
                    (Some(1), Some(b)) => Some(b - 1),
                    (Some(a), Some(1)) => Some(a - 1),
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                },
                ..Default::default()
            },
            "Gemm" | "Flatten" | "NonZero" => Known::rank(2),
            "Shape" => {
                let len = rank(0).map(|r| {
                    let r = r as i64;
                    let clamp = |a: i64| (if a < 0 { a + r } else { a }).clamp(0, r);
                    let start = clamp(attr_i(n, "start").unwrap_or(0));
                    let end = clamp(attr_i(n, "end").unwrap_or(r));
                    (end - start).max(0) as usize
                });
                // The shape of a vector of known length is known too (a shape's shape).
                let k = input(0);
                let ints = (k.rank == Some(1) && len == Some(1))
                    .then_some(k.len.map(|l| vec![l as i64]))
                    .flatten();
                Known {
                    rank: Some(1),
                    len,
                    ints,
                }
            }
            "Size" => Known::rank(0),
            "Range" => Known::vector(None),
            "Reshape" | "ConstantOfShape" => {
                let shape = input(if op == "Reshape" { 1 } else { 0 });
                let rank = shape.len.or(shape.ints.as_ref().map(|v| v.len()));
                let len = (rank == Some(1))
                    .then(|| shape.ints.as_ref().and_then(|v| usize::try_from(v[0]).ok()))
                    .flatten()
                    .filter(|_| op == "ConstantOfShape");
                Known {
                    rank,
                    len,
                    ints: None,
                }
            }
            "Expand" => {
                let shape = input(1);
                let r = broadcast(&[rank(0), shape.len]);
                Known {
                    rank: r,
                    ..Default::default()
                }
            }
            "Gather" => {
                let (data, idx) = (input(0), input(1));
                let r = match (data.rank, idx.rank) {
                    (Some(r), Some(q)) if r >= 1 => Some(r + q - 1),
                    _ => None,
                };
                let len = (data.rank == Some(1) && idx.rank == Some(1))
                    .then_some(idx.len)
                    .flatten();
                Known {
                    rank: r,
                    len,
                    ints: None,
                }
            }
            "Unsqueeze" => {
                let r = rank(0).zip(axes_count(n, known, 1)).map(|(r, k)| r + k);
                Known {
                    rank: r,
                    len: (r == Some(1)).then_some(1),
                    ints: None,
                }
            }
            "Squeeze" => Known {
                rank: rank(0)
                    .zip(axes_count(n, known, 1))
                    .and_then(|(r, k)| r.checked_sub(k)),
                ..Default::default()
            },
            "Concat" => {
                let ks: Vec<Known> = (0..n.input.len()).map(input).collect();
                let r = ks.iter().find_map(|k| k.rank);
                let len = if r == Some(1) {
                    ks.iter().try_fold(0usize, |s, k| k.len.map(|l| s + l))
                } else {
                    None
                };
                Known {
                    rank: r,
                    len,
                    ints: None,
                }
            }
            "ArgMax" | "ArgMin" => Known {
                rank: rank(0).and_then(|r| {
                    if attr_i(n, "keepdims").unwrap_or(1) != 0 {
                        Some(r)
                    } else {
                        r.checked_sub(1)
                    }
                }),
                ..Default::default()
            },
            _ if op.starts_with("Reduce") => {
                let keep = attr_i(n, "keepdims").unwrap_or(1) != 0;
                let r = if keep {
                    rank(0)
                } else {
                    let noop = attr_i(n, "noop_with_empty_axes").unwrap_or(0) != 0;
                    match axes_count(n, known, 1) {
                        Some(0) | None if n.input.get(1).is_none_or(|s| s.is_empty()) => {
                            if noop {
                                rank(0)
                            } else {
                                Some(0)
                            }
                        }
                        Some(k) => rank(0).and_then(|r| r.checked_sub(k)),
                        None => None,
                    }
                };
                Known {
                    rank: r,
                    ..Default::default()
                }
            }
            _ => Known::default(),
        }
    };
    // Split's pieces have the input's rank; other extra outputs are not tracked.
    let mut out = vec![first.clone()];
    for _ in 1..n.output.len() {
        out.push(if op == "Split" {
            first.clone()
        } else {
            Known::default()
        });
    }
    out
}

/// The node's label in messages.
fn label(n: &NodeProto) -> &str {
    if n.name.is_empty() {
        &n.op_type
    } else {
        &n.name
    }
}

/// Checks `n`'s axis attributes against what is known of its inputs.
fn check_node(n: &NodeProto, known: &HashMap<&str, Known>) -> Result<()> {
    let rank_of = |i: usize| {
        n.input
            .get(i)
            .filter(|s| !s.is_empty())
            .and_then(|s| known.get(s.as_str()))
            .and_then(|k| k.rank)
    };
    let op = n.op_type.as_str();
    let in_range = |what: &str, v: i64, r: usize| -> Result<()> {
        let r = r as i64;
        if v < -r || v >= r {
            bail!(
                "node {} ({op}) has {what} = {v}, but its input has rank {r} (allowed: {} ..= {})",
                label(n),
                -r,
                r - 1
            );
        }
        Ok(())
    };
    match op {
        "Softmax"
        | "LogSoftmax"
        | "Hardmax"
        | "LayerNormalization"
        | "SimplifiedLayerNormalization"
        | "RMSNormalization"
        | "LpNormalization"
        | "Gather"
        | "GatherElements"
        | "ScatterElements"
        | "Split"
        | "ArgMax"
        | "ArgMin"
        | "TopK"
        | "Compress"
        | "QuantizeLinear"
        | "DequantizeLinear" => {
            if let (Some(a), Some(r)) = (attr(n, "axis"), rank_of(0)) {
                in_range("axis", a.i, r)?;
            }
            // The defaults: -1 (always valid when rank >= 1), or 1 for Softmax before
            // opset 13 (tract flattens from it) and 0 for Gather/Split: a scalar has no axes.
            if attr(n, "axis").is_none() && rank_of(0) == Some(0) && op != "Compress" {
                bail!(
                    "node {} ({op}) needs an axis, but its input is a scalar",
                    label(n)
                );
            }
        }
        "Concat" => {
            let a = attr(n, "axis").map_or(0, |a| a.i);
            for i in 0..n.input.len() {
                if let Some(r) = rank_of(i) {
                    in_range("axis", a, r)?;
                }
            }
        }
        "Flatten" => {
            if let (Some(a), Some(r)) = (attr(n, "axis"), rank_of(0)) {
                // Flatten's axis may also be the rank itself.
                let (v, r) = (a.i, r as i64);
                if v < -r || v > r {
                    bail!(
                        "node {} (Flatten) has axis = {v}, but its input has rank {r} (allowed: {} ..= {r})",
                        label(n),
                        -r
                    );
                }
            }
        }
        "Squeeze" | "Unsqueeze" => {
            if let (Some(axes), Some(r)) = (axes_of(n, known, 1), rank_of(0)) {
                let r = if op == "Unsqueeze" { r + axes.len() } else { r };
                let mut seen = Vec::new();
                for &v in &axes {
                    in_range("axes", v, r)?;
                    let v = if v < 0 { v + r as i64 } else { v };
                    if seen.contains(&v) {
                        bail!("node {} ({op}) names axis {v} twice", label(n));
                    }
                    seen.push(v);
                }
            }
        }
        "Transpose" => {
            if let (Some(p), Some(r)) = (attr(n, "perm"), rank_of(0)) {
                let mut sorted = p.ints.clone();
                sorted.sort_unstable();
                if sorted != (0..r as i64).collect::<Vec<_>>() {
                    bail!(
                        "node {} (Transpose) has perm = {:?}, not a permutation of the {r} axes of its input",
                        label(n),
                        p.ints
                    );
                }
            }
        }
        _ if op.starts_with("Reduce") => {
            if let (Some(axes), Some(r)) = (axes_of(n, known, 1), rank_of(0)) {
                for &v in &axes {
                    in_range("axes", v, r)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// The rank of every tensor that can be derived (None: unknown), for tests and tools.
pub fn ranks(g: &GraphProto, input_ranks: &[(&str, usize)]) -> HashMap<String, Option<usize>> {
    infer_all(g, input_ranks)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.rank))
        .collect()
}

fn infer_all<'g>(g: &'g GraphProto, input_ranks: &[(&str, usize)]) -> HashMap<&'g str, Known> {
    let mut known: HashMap<&str, Known> = HashMap::new();
    for v in &g.input {
        let declared = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::TensorType(t)) => t.shape.as_ref().map(|s| s.dim.len()),
            _ => None,
        };
        let rank = input_ranks
            .iter()
            .find(|(n, _)| *n == v.name)
            .map(|&(_, r)| r)
            .or(declared);
        known.insert(
            v.name.as_str(),
            Known {
                rank,
                ..Known::default()
            },
        );
    }
    for t in &g.initializer {
        known.insert(t.name.as_str(), tensor_known(t));
    }
    // The graph need not be sorted: passes until nothing new is learned (one per node at
    // most, so a cycle ends too).
    let mut done = vec![false; g.node.len()];
    for _ in 0..=g.node.len() {
        let mut learned = false;
        for (k, n) in g.node.iter().enumerate() {
            if done[k] {
                continue;
            }
            let ready = n
                .input
                .iter()
                .filter(|i| !i.is_empty())
                .all(|i| known.get(i.as_str()).is_some_and(|k| k.rank.is_some()));
            let out = infer(n, &known);
            for (name, k) in n.output.iter().zip(out) {
                if name.is_empty() {
                    continue;
                }
                let entry = known.entry(name.as_str()).or_default();
                if *entry != k && (entry.rank.is_none() || ready) {
                    *entry = k;
                    learned = true;
                }
            }
            done[k] = ready;
        }
        if !learned {
            break;
        }
    }
    known
}

/// The ranks of all tensors that can be derived, `input_ranks` overriding the declared
/// ranks of graph inputs (the runner fixes them to [batch, seq]); then every node's axes
/// checked against them.
pub fn check_axes(g: &GraphProto, input_ranks: &[(&str, usize)]) -> Result<()> {
    let known = infer_all(g, input_ranks);
    for n in &g.node {
        check_node(n, &known)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{attr_int, attr_ints, GraphBuilder};

    fn graph(op: &str, attrs: Vec<AttributeProto>) -> GraphProto {
        let mut b = GraphBuilder::new("g");
        b.input_f32("x", &[1, 8, 16]);
        b.init_f32("s", &[16], &[1.0; 16]);
        b.node_with(op, &["x", "s"], &["y"], attrs);
        b.output("y");
        b.build().graph.unwrap()
    }

    #[test]
    fn axes_inside_the_rank_pass() {
        for a in [-3, -1, 0, 2] {
            check_axes(&graph("LayerNormalization", vec![attr_int("axis", a)]), &[]).unwrap();
            check_axes(&graph("Softmax", vec![attr_int("axis", a)]), &[]).unwrap();
        }
        check_axes(
            &graph("Transpose", vec![attr_ints("perm", &[0, 2, 1])]),
            &[],
        )
        .unwrap();
    }

    #[test]
    fn axes_outside_the_rank_are_errors_naming_the_node() {
        for (op, a) in [
            ("LayerNormalization", -4),
            ("LayerNormalization", 3),
            ("Softmax", -5),
            ("Gather", -4),
            ("Concat", 3),
            ("Split", -9),
            ("Flatten", 4),
        ] {
            let e = check_axes(&graph(op, vec![attr_int("axis", a)]), &[]).unwrap_err();
            let e = format!("{e:#}");
            assert!(
                e.contains(&format!("/{op}_0")) && e.contains("rank 3"),
                "{e}"
            );
        }
        for (op, axes) in [("ReduceMean", [-4]), ("Squeeze", [3]), ("Unsqueeze", [-5])] {
            let e = check_axes(&graph(op, vec![attr_ints("axes", &axes)]), &[]).unwrap_err();
            assert!(format!("{e:#}").contains(&format!("/{op}_0")), "{e:#}");
        }
        let e = check_axes(&graph("Transpose", vec![attr_ints("perm", &[0, 1])]), &[]);
        assert!(format!("{:#}", e.unwrap_err()).contains("not a permutation"));
    }

    #[test]
    fn ranks_follow_shapes_through_reshape_and_unknown_ranks_are_not_errors() {
        let mut b = GraphBuilder::new("g");
        b.input_f32("x", &[1, 8, 16]);
        b.node("Shape", &["x"], &["s"]);
        b.init_i64("two", &[1], &[2]);
        b.init_i64("i", &[], &[0]);
        b.node("Gather", &["s", "i"], &["d0"]);
        b.init_i64("zero", &[1], &[0]);
        b.node("Unsqueeze", &["d0", "zero"], &["d0v"]);
        b.init_i64("rest", &[3], &[8, 4, 4]);
        b.node("Concat", &["d0v", "rest"], &["shape"]).attribute = vec![attr_int("axis", 0)];
        b.node("Reshape", &["x", "shape"], &["r"]);
        b.node("Softmax", &["r"], &["y"]).attribute = vec![attr_int("axis", -4)];
        b.output("y");
        let g = b.build().graph.unwrap();
        check_axes(&g, &[]).unwrap();
        let mut bad = g.clone();
        bad.node.last_mut().unwrap().attribute = vec![attr_int("axis", -5)];
        assert!(format!("{:#}", check_axes(&bad, &[]).unwrap_err()).contains("rank 4"));
        // An input of unknown rank: nothing to check against.
        let mut unknown = graph("Softmax", vec![attr_int("axis", -9)]);
        unknown.input[0].r#type = None;
        check_axes(&unknown, &[]).unwrap();
        // The runner's fixed input ranks apply instead of the declared ones.
        let e = check_axes(&graph("Softmax", vec![attr_int("axis", -3)]), &[("x", 2)]);
        assert!(format!("{:#}", e.unwrap_err()).contains("rank 2"));
    }
}
