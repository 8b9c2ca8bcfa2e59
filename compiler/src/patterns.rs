//! Finding the places where SUF nodes go: single ops and whole multi-node patterns.
//!
//! Patterns are matched as wholes (SPEC.md section 2): one SUF node after the GELU's final
//! Mul, not one per inner op; the Adds inside a LayerNorm are part of the LayerNorm.

use crate::arity;
use crate::graph::GraphView;
use crate::tensor::dtype;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::str::FromStr;

/// The kinds of op a SUF node can follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Embedding,
    MatMul,
    Add,
    LayerNorm,
    RmsNorm,
    Softmax,
    Gelu,
    Silu,
}

impl OpKind {
    pub const ALL: [OpKind; 8] = [
        OpKind::Embedding,
        OpKind::MatMul,
        OpKind::Add,
        OpKind::LayerNorm,
        OpKind::RmsNorm,
        OpKind::Softmax,
        OpKind::Gelu,
        OpKind::Silu,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Embedding => "embedding",
            OpKind::MatMul => "matmul",
            OpKind::Add => "add",
            OpKind::LayerNorm => "layernorm",
            OpKind::RmsNorm => "rmsnorm",
            OpKind::Softmax => "softmax",
            OpKind::Gelu => "gelu",
            OpKind::Silu => "silu",
        }
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OpKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let lower = s.to_ascii_lowercase();
        OpKind::ALL
            .into_iter()
            .find(|k| k.as_str() == lower)
            .ok_or_else(|| {
                let names: Vec<&str> = OpKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown op kind `{s}` (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

/// One place where a SUF node goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    pub kind: OpKind,
    /// How it was recognised, e.g. "erf pattern" or "LayerNormalization op".
    pub form: &'static str,
    /// The tensor the SUF node quantizes: the final output of the op or pattern.
    pub anchor: String,
    /// The data tensor the op or pattern reads (what a replacement op takes as input).
    pub input: String,
    /// Nodes making up the op or pattern (indices into `graph.node`).
    pub nodes: Vec<usize>,
    /// Float initializers of the op (weights, biases, gamma, beta, tables) to encode.
    pub params: Vec<String>,
}

/// An op of a matchable kind that gets no SUF node, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Untouched {
    pub node: String,
    pub op: String,
    pub reason: String,
}

pub const MASK_BIAS: &str = "attention-mask bias";
pub const NOT_DATA: &str = "shape/index arithmetic, not model data";

#[derive(Debug, Default)]
pub struct Matches {
    pub sites: Vec<Site>,
    pub untouched: Vec<Untouched>,
}

/// Finds every site. `mask_bound` is the magnitude from which a constant operand of an Add
/// counts as a mask fill (2^(n-1-f): it would wrap in the ring).
///
/// A single op of a matchable kind without the inputs ONNX requires is an error naming it
/// (a raw proto need not have gone through the loader's checks); a composite pattern with a
/// node short of inputs or outputs simply does not match.
pub fn find_sites(view: &GraphView, mask_bound: f64) -> Result<Matches> {
    let mut m = Matches::default();
    let mut covered: HashSet<usize> = HashSet::new();
    let composite: [fn(&GraphView, usize) -> Option<Site>; 5] =
        [layer_norm_decomposed, rms_norm, gelu_erf, gelu_tanh, silu];
    for matcher in composite {
        for i in 0..view.graph.node.len() {
            if covered.contains(&i) {
                continue;
            }
            let _scope = crate::panic_guard::NodeScope::enter(&view.node(i).name);
            if let Some(site) = matcher(view, i) {
                if site.nodes.iter().any(|n| covered.contains(n)) {
                    continue;
                }
                covered.extend(site.nodes.iter().copied());
                m.sites.push(site);
            }
        }
    }
    let data = data_tensors(view, mask_bound);
    for (i, n) in view.graph.node.iter().enumerate() {
        let Some(anchor) = n.output.first() else {
            continue;
        };
        if covered.contains(&i) {
            continue;
        }
        let _scope = crate::panic_guard::NodeScope::enter(&n.name);
        let single = |kind, form| Site {
            kind,
            form,
            anchor: anchor.clone(),
            input: n.input.first().cloned().unwrap_or_default(),
            nodes: vec![i],
            params: float_initializers(view, &n.input),
        };
        let op = n.op_type.as_str();
        if SINGLE_OPS.contains(&op) {
            arity::require_inputs(n)?;
        }
        match op {
            "MatMul" => m.sites.push(single(OpKind::MatMul, "MatMul op")),
            "Gemm" => m.sites.push(single(OpKind::MatMul, "Gemm op")),
            "LayerNormalization" => m
                .sites
                .push(single(OpKind::LayerNorm, "LayerNormalization op")),
            "SimplifiedLayerNormalization" | "RMSNormalization" => {
                m.sites.push(single(OpKind::RmsNorm, "RMSNormalization op"))
            }
            "Softmax" => m.sites.push(single(OpKind::Softmax, "Softmax op")),
            "Gelu" => m.sites.push(single(OpKind::Gelu, "Gelu op")),
            "Gather" => {
                let table = arity::input(n, 0)?;
                if is_mask_table(view, table, mask_bound) && feeds_only_adds(view, anchor) {
                    m.untouched.push(Untouched {
                        reason: format!("{MASK_BIAS} (table `{table}` holds values no ring holds)"),
                        ..untouched(view, i, MASK_BIAS)
                    })
                } else if is_float_table(view, table) {
                    m.sites.push(Site {
                        params: vec![table.to_string()],
                        ..single(OpKind::Embedding, "Gather of an embedding table")
                    })
                }
            }
            "Add" => match classify_add(view, i, &data, mask_bound) {
                AddRole::Data => m.sites.push(single(OpKind::Add, "Add op")),
                AddRole::MaskBias => m.untouched.push(untouched(view, i, MASK_BIAS)),
                AddRole::NotData => m.untouched.push(untouched(view, i, NOT_DATA)),
            },
            _ => {}
        }
    }
    m.sites.sort_by_key(|s| s.nodes.iter().max().copied());
    Ok(m)
}

/// The ops matched on their own (above); they must have the inputs ONNX requires.
const SINGLE_OPS: [&str; 9] = [
    "MatMul",
    "Gemm",
    "LayerNormalization",
    "SimplifiedLayerNormalization",
    "RMSNormalization",
    "Softmax",
    "Gelu",
    "Gather",
    "Add",
];

fn untouched(view: &GraphView, i: usize, reason: &str) -> Untouched {
    let n = view.node(i);
    Untouched {
        node: n.name.clone(),
        op: n.op_type.clone(),
        reason: reason.into(),
    }
}

fn float_initializers(view: &GraphView, names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|name| {
            view.initializer(name)
                .is_some_and(|t| t.data_type == dtype::FLOAT)
        })
        .cloned()
        .collect()
}

fn is_float_table(view: &GraphView, name: &str) -> bool {
    view.initializer(name)
        .is_some_and(|t| t.data_type == dtype::FLOAT && t.dims.len() == 2)
}

/// A float table holding values no ring holds (non-finite, or at least `mask_bound`): a
/// lookup of it is an exporter's mask bias (e.g. a -inf table added to attention scores),
/// not model data.
fn is_mask_table(view: &GraphView, name: &str, mask_bound: f64) -> bool {
    view.initializer(name).is_some_and(|t| {
        t.data_type == dtype::FLOAT
            && crate::tensor::any_f32(t, |v| !v.is_finite() || (v as f64).abs() >= mask_bound)
    })
}

/// True if `tensor` reaches only Add nodes, through data movement at most: how an
/// exporter's mask table reaches the attention scores.
fn feeds_only_adds(view: &GraphView, tensor: &str) -> bool {
    const MOVES: [&str; 6] = [
        "Unsqueeze",
        "Reshape",
        "Expand",
        "Transpose",
        "Cast",
        "Squeeze",
    ];
    let consumers = view.consumers(tensor);
    !consumers.is_empty()
        && !view.is_output(tensor)
        && consumers.iter().all(|&c| {
            let n = view.node(c);
            n.op_type == "Add"
                || (MOVES.contains(&n.op_type.as_str())
                    && n.input.first().is_some_and(|i| i == tensor)
                    && n.output.first().is_some_and(|o| feeds_only_adds(view, o)))
        })
}

/// Tensors that carry model data (activations), as opposed to shapes, indices and masks.
///
/// Seeded by float graph inputs, embedding lookups and matrix products, propagated through
/// every op except those that only look at shapes or compare values.
pub fn data_tensors(view: &GraphView, mask_bound: f64) -> HashSet<String> {
    const NOT_PROPAGATING: [&str; 14] = [
        "Shape",
        "Size",
        "Equal",
        "Less",
        "Greater",
        "LessOrEqual",
        "GreaterOrEqual",
        "Not",
        "And",
        "Or",
        "ArgMax",
        "ArgMin",
        "NonZero",
        "ConstantOfShape",
    ];
    let mut data: HashSet<String> = view
        .graph
        .input
        .iter()
        .filter(|v| is_float_value(v))
        .map(|v| v.name.clone())
        .collect();
    for n in &view.graph.node {
        let op = n.op_type.as_str();
        let first = n.input.first().map(String::as_str);
        let seeded = matches!(op, "MatMul" | "Gemm")
            || (op == "Gather"
                && first.is_some_and(|t| is_float_table(view, t))
                && !(first.is_some_and(|t| is_mask_table(view, t, mask_bound))
                    && n.output.first().is_some_and(|o| feeds_only_adds(view, o))));
        let propagates = match op {
            _ if NOT_PROPAGATING.contains(&op) => false,
            "Where" => n.input.iter().skip(1).any(|i| data.contains(i)),
            "Cast" => {
                first.is_some_and(|t| data.contains(t))
                    && n.attribute.iter().any(|a| {
                        a.name == "to"
                            && matches!(a.i as i32, dtype::FLOAT | dtype::DOUBLE | 10 | 16)
                    })
            }
            _ => n.input.iter().any(|i| data.contains(i)),
        };
        if seeded || propagates {
            data.extend(n.output.iter().filter(|o| !o.is_empty()).cloned());
        }
    }
    data
}

fn is_float_value(v: &tract_onnx::pb::ValueInfoProto) -> bool {
    use tract_onnx::pb::type_proto::Value;
    matches!(
        v.r#type.as_ref().and_then(|t| t.value.as_ref()),
        Some(Value::TensorType(t)) if t.elem_type == dtype::FLOAT || t.elem_type == dtype::DOUBLE
    )
}

enum AddRole {
    Data,
    MaskBias,
    NotData,
}

/// An Add on data whose other operand is built from the graph's inputs without passing
/// through data (the attention mask turned into an additive bias), or is a constant so
/// large it would wrap in the ring, is a mask bias: encoding it would destroy the masking.
fn classify_add(view: &GraphView, i: usize, data: &HashSet<String>, mask_bound: f64) -> AddRole {
    let n = view.node(i);
    if n.output.first().is_none_or(|o| !data.contains(o)) {
        return AddRole::NotData;
    }
    for operand in &n.input {
        if data.contains(operand) {
            continue;
        }
        if let Some(values) = view.constant(operand) {
            if values.iter().any(|v| v.abs() >= mask_bound) {
                return AddRole::MaskBias;
            }
            continue;
        }
        let from_inputs = match view.producer(operand) {
            None => view.is_input(operand),
            Some(p) => std::iter::once(p)
                .chain(view.ancestors(p))
                .any(|a| view.node(a).input.iter().any(|t| view.is_input(t))),
        };
        if from_inputs {
            return AddRole::MaskBias;
        }
    }
    AddRole::Data
}

// ---- composite patterns -------------------------------------------------------------

/// `x - mean(x)` normalised by `sqrt(mean((x - mean)^2) + eps)`, then optional `* gamma`
/// and `+ beta` (the opset < 17 export of LayerNorm).
fn layer_norm_decomposed(view: &GraphView, div: usize) -> Option<Site> {
    let n = view.node(div);
    if n.op_type != "Div" {
        return None;
    }
    let [centered, scale] = n.input.as_slice() else {
        return None;
    };
    let sub = view.producer_op(centered, "Sub")?;
    let x = view.node(sub).input.first()?;
    let mean = view.producer_op(view.node(sub).input.get(1)?, "ReduceMean")?;
    (view.node(mean).input.first()? == x).then_some(())?;
    let sqrt = view.producer_op(scale, "Sqrt")?;
    let (add_eps, var) = add_with_constant(view, view.node(sqrt).input.first()?)?;
    let var_mean = view.producer_op(var, "ReduceMean")?;
    let square = square_of(view, view.node(var_mean).input.first()?, centered)?;
    let mut nodes = vec![mean, sub, square, var_mean, add_eps, sqrt, div];
    let (anchor, params) = affine_tail(view, n.output.first()?, &mut nodes);
    Some(Site {
        kind: OpKind::LayerNorm,
        form: "decomposed pattern",
        anchor,
        input: x.clone(),
        nodes,
        params,
    })
}

/// `x / sqrt(mean(x^2) + eps)` (or `x * (1 / sqrt(..))`), then `* weight` (Llama's RMSNorm).
fn rms_norm(view: &GraphView, sqrt: usize) -> Option<Site> {
    let n = view.node(sqrt);
    if n.op_type != "Sqrt" {
        return None;
    }
    let (add_eps, ms) = add_with_constant(view, n.input.first()?)?;
    let mean = view.producer_op(ms, "ReduceMean")?;
    let sq_out = view.node(mean).input.first()?;
    let sq = view.producer(sq_out)?;
    let x = view.node(sq).input.first()?.clone();
    square_of(view, sq_out, &x)?;
    let s = n.output.first()?;
    let mut nodes = vec![sq, mean, add_eps, sqrt];
    let normed = if let Some(div) = view.sole_consumer_op(s, "Div") {
        let d = view.node(div);
        let (d_in, d_out) = (d.input.first()?, d.output.first()?);
        if *d_in == x {
            nodes.push(div);
            d_out.clone()
        } else if view.is_scalar(d_in, 1.0, 0.0) {
            let mul = view.sole_consumer_op(d_out, "Mul")?;
            (view.other_input(mul, d_out)? == x).then_some(())?;
            nodes.extend([div, mul]);
            view.node(mul).output.first()?.clone()
        } else {
            return None;
        }
    } else {
        let rec = view.sole_consumer_op(s, "Reciprocal")?;
        let out = view.node(rec).output.first()?;
        let mul = view.sole_consumer_op(out, "Mul")?;
        (view.other_input(mul, out)? == x).then_some(())?;
        nodes.extend([rec, mul]);
        view.node(mul).output.first()?.clone()
    };
    // Exporters may cast back to the activation type before the weight.
    let mut cur = normed;
    while let Some(cast) = view.sole_consumer_op(&cur, "Cast") {
        nodes.push(cast);
        cur = view.node(cast).output.first()?.clone();
    }
    let mut params = vec![];
    if let Some(mul) = view.sole_consumer_op(&cur, "Mul") {
        let w = view.other_input(mul, &cur)?;
        if view.initializer(w).is_some() {
            nodes.push(mul);
            params.push(w.to_string());
            cur = view.node(mul).output.first()?.clone();
        }
    }
    Some(Site {
        kind: OpKind::RmsNorm,
        form: "decomposed pattern",
        anchor: cur,
        input: x.clone(),
        nodes,
        params,
    })
}

/// `x * 0.5 * (1 + erf(x / sqrt(2)))`, any association of the products.
fn gelu_erf(view: &GraphView, erf: usize) -> Option<Site> {
    let n = view.node(erf);
    if n.op_type != "Erf" {
        return None;
    }
    let scaled = view.producer(n.input.first()?)?;
    let s = view.node(scaled);
    let [s0, s1, ..] = s.input.as_slice() else {
        return None;
    };
    let x = match s.op_type.as_str() {
        "Div" if view.is_scalar(s1, std::f64::consts::SQRT_2, 1e-4) => s0,
        "Mul" => {
            let c = std::f64::consts::FRAC_1_SQRT_2;
            if view.is_scalar(s1, c, 1e-4) {
                s0
            } else if view.is_scalar(s0, c, 1e-4) {
                s1
            } else {
                return None;
            }
        }
        _ => return None,
    };
    let (add_one, _) = add_constant_consumer(view, n.output.first()?, 1.0)?;
    let mut nodes = vec![scaled, erf, add_one];
    let anchor = half_x_tail(view, view.node(add_one).output.first()?, x, &mut nodes)?;
    Some(Site {
        kind: OpKind::Gelu,
        form: "erf pattern",
        anchor,
        input: x.clone(),
        nodes,
        params: vec![],
    })
}

/// GPT-2's gelu_new: `0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))`.
fn gelu_tanh(view: &GraphView, tanh: usize) -> Option<Site> {
    let n = view.node(tanh);
    if n.op_type != "Tanh" {
        return None;
    }
    let (scale_mul, inner) = mul_with_constant(view, n.input.first()?, 0.7978845608, 1e-4)?;
    let inner_add = view.producer_op(inner, "Add")?;
    let [a, b] = view.node(inner_add).input.as_slice() else {
        return None;
    };
    let (x, cubic_term) = if is_cubic_term(view, b, a) {
        (a, b)
    } else if is_cubic_term(view, a, b) {
        (b, a)
    } else {
        return None;
    };
    let (coef_mul, cube) = mul_with_constant(view, cubic_term, 0.044715, 1e-6)?;
    let mut nodes = cube_nodes(view, cube, x)?;
    nodes.extend([coef_mul, inner_add, scale_mul, tanh]);
    let (add_one, _) = add_constant_consumer(view, n.output.first()?, 1.0)?;
    nodes.push(add_one);
    let anchor = half_x_tail(view, view.node(add_one).output.first()?, x, &mut nodes)?;
    Some(Site {
        kind: OpKind::Gelu,
        form: "tanh pattern (gelu_new)",
        anchor,
        input: x.clone(),
        nodes,
        params: vec![],
    })
}

/// `x * sigmoid(x)`.
fn silu(view: &GraphView, sig: usize) -> Option<Site> {
    let n = view.node(sig);
    if n.op_type != "Sigmoid" {
        return None;
    }
    let (x, y) = (n.input.first()?, n.output.first()?);
    let mul = view.sole_consumer_op(y, "Mul")?;
    (view.other_input(mul, y)? == x).then_some(())?;
    let anchor = view.node(mul).output.first()?.clone();
    Some(Site {
        kind: OpKind::Silu,
        form: "x*Sigmoid(x) pattern",
        anchor,
        input: x.clone(),
        nodes: vec![sig, mul],
        params: vec![],
    })
}

// ---- pattern helpers ----------------------------------------------------------------

/// `Add(t, c)` producing `tensor` with a constant `c`: returns (add node, t).
fn add_with_constant<'a>(view: &'a GraphView, tensor: &str) -> Option<(usize, &'a str)> {
    let add = view.producer_op(tensor, "Add")?;
    let [a, b] = view.node(add).input.as_slice() else {
        return None;
    };
    if view.scalar(b).is_some() {
        Some((add, a))
    } else if view.scalar(a).is_some() {
        Some((add, b))
    } else {
        None
    }
}

/// `Mul(t, c)` producing `tensor` with `c` close to `value`: returns (mul node, t).
fn mul_with_constant<'a>(
    view: &'a GraphView,
    tensor: &str,
    value: f64,
    tol: f64,
) -> Option<(usize, &'a str)> {
    let mul = view.producer_op(tensor, "Mul")?;
    let [a, b] = view.node(mul).input.as_slice() else {
        return None;
    };
    if view.is_scalar(b, value, tol) {
        Some((mul, a))
    } else if view.is_scalar(a, value, tol) {
        Some((mul, b))
    } else {
        None
    }
}

/// The sole consumer `Add(tensor, value)`: returns (add node, tensor).
fn add_constant_consumer<'a>(
    view: &'a GraphView,
    tensor: &'a str,
    value: f64,
) -> Option<(usize, &'a str)> {
    let add = view.sole_consumer_op(tensor, "Add")?;
    let other = view.other_input(add, tensor)?;
    view.is_scalar(other, value, 1e-6).then_some((add, tensor))
}

/// The node computing `tensor = x^2` (Pow(x, 2) or Mul(x, x)).
fn square_of(view: &GraphView, tensor: &str, x: &str) -> Option<usize> {
    let p = view.producer(tensor)?;
    let n = view.node(p);
    let [a, b, ..] = n.input.as_slice() else {
        return None;
    };
    match n.op_type.as_str() {
        "Mul" if a == x && b == x => Some(p),
        "Pow" if a == x && view.is_scalar(b, 2.0, 0.0) => Some(p),
        _ => None,
    }
}

fn is_cubic_term(view: &GraphView, term: &str, x: &str) -> bool {
    mul_with_constant(view, term, 0.044715, 1e-6)
        .is_some_and(|(_, cube)| cube_nodes(view, cube, x).is_some())
}

/// The nodes computing `cube = x^3`: Pow(x, 3), or Mul(Mul(x, x), x) after normalisation.
fn cube_nodes(view: &GraphView, cube: &str, x: &str) -> Option<Vec<usize>> {
    let p = view.producer(cube)?;
    let n = view.node(p);
    match (n.op_type.as_str(), n.input.as_slice()) {
        ("Pow", [a, b, ..]) if a == x && view.is_scalar(b, 3.0, 0.0) => Some(vec![p]),
        ("Mul", _) => {
            let sq = view.other_input(p, x)?;
            Some(vec![square_of(view, sq, x)?, p])
        }
        _ => None,
    }
}

/// The closing `* x * 0.5` of a GELU, in any association: `(0.5*x) * u`, `(x*u) * 0.5`
/// or `(u*0.5) * x`. Adds its nodes; returns the GELU's output tensor.
fn half_x_tail(view: &GraphView, u: &str, x: &str, nodes: &mut Vec<usize>) -> Option<String> {
    let m1 = view.sole_consumer_op(u, "Mul")?;
    let other = view.other_input(m1, u)?;
    let m1_out = view.node(m1).output.first()?;
    if other == x || view.is_scalar(other, 0.5, 0.0) {
        let m2 = view.sole_consumer_op(m1_out, "Mul")?;
        let last = view.other_input(m2, m1_out)?;
        let ok = if other == x {
            view.is_scalar(last, 0.5, 0.0)
        } else {
            last == x
        };
        ok.then_some(())?;
        let out = view.node(m2).output.first()?.clone();
        nodes.extend([m1, m2]);
        return Some(out);
    }
    let (m0, base) = mul_with_constant(view, other, 0.5, 0.0)?;
    (base == x && view.consumers(other).len() == 1).then_some(())?;
    nodes.extend([m0, m1]);
    Some(m1_out.clone())
}

/// The optional `* gamma + beta` after a normalisation; extends `nodes`, returns the
/// output tensor and the parameters.
fn affine_tail(view: &GraphView, normed: &str, nodes: &mut Vec<usize>) -> (String, Vec<String>) {
    let mut cur = normed.to_string();
    let mut params = vec![];
    for op in ["Mul", "Add"] {
        let Some(node) = view.sole_consumer_op(&cur, op) else {
            break;
        };
        let Some(p) = view.other_input(node, &cur) else {
            break;
        };
        if view.initializer(p).is_none() {
            break;
        }
        let Some(out) = view.node(node).output.first() else {
            break;
        };
        params.push(p.to_string());
        nodes.push(node);
        cur = out.clone();
    }
    (cur, params)
}

/// Kinds named by `--only` / `--skip`, resolved against the full set.
pub fn selected_kinds(
    only: Option<&BTreeSet<OpKind>>,
    skip: &BTreeSet<OpKind>,
) -> BTreeSet<OpKind> {
    OpKind::ALL
        .into_iter()
        .filter(|k| only.is_none_or(|o| o.contains(k)) && !skip.contains(k))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::GraphBuilder;
    use crate::normalize::normalize;

    fn sites_of(b: &GraphBuilder) -> Matches {
        let mut g = b.build().graph.unwrap();
        normalize(&mut g);
        let view = GraphView::new(&g);
        let m = find_sites(&view, 2f64.powi(24)).unwrap();
        // Return owned data: the view borrows `g`.
        Matches {
            sites: m.sites,
            untouched: m.untouched,
        }
    }

    fn kinds(m: &Matches) -> Vec<(OpKind, &'static str)> {
        m.sites.iter().map(|s| (s.kind, s.form)).collect()
    }

    #[test]
    fn gelu_erf_is_one_site_after_the_final_mul() {
        for half_first in [true, false] {
            let mut b = GraphBuilder::new("gelu");
            b.input_f32("x", &[4]);
            b.scalar("sqrt2", std::f32::consts::SQRT_2)
                .scalar("one", 1.0)
                .scalar("half", 0.5);
            b.node("Div", &["x", "sqrt2"], &["d"]);
            b.node("Erf", &["d"], &["e"]);
            b.node("Add", &["e", "one"], &["u"]);
            if half_first {
                b.node("Mul", &["x", "half"], &["hx"]);
                b.node("Mul", &["hx", "u"], &["y"]);
            } else {
                b.node("Mul", &["x", "u"], &["xu"]);
                b.node("Mul", &["xu", "half"], &["y"]);
            }
            b.output("y");
            let m = sites_of(&b);
            assert_eq!(kinds(&m), [(OpKind::Gelu, "erf pattern")]);
            assert_eq!(m.sites[0].anchor, "y");
            assert_eq!(m.sites[0].nodes.len(), 5);
        }
    }

    #[test]
    fn gelu_tanh_with_pow_is_one_site() {
        let mut b = GraphBuilder::new("gelu_new");
        b.input_f32("x", &[4]);
        b.scalar("three", 3.0)
            .scalar("c", 0.044715)
            .scalar("k", 0.797_884_6);
        b.scalar("one", 1.0).scalar("half", 0.5);
        b.node("Mul", &["half", "x"], &["hx"]);
        b.node("Pow", &["x", "three"], &["p"]);
        b.node("Mul", &["c", "p"], &["q"]);
        b.node("Add", &["x", "q"], &["r"]);
        b.node("Mul", &["k", "r"], &["s"]);
        b.node("Tanh", &["s"], &["t"]);
        b.node("Add", &["one", "t"], &["u"]);
        b.node("Mul", &["hx", "u"], &["y"]);
        b.output("y");
        let m = sites_of(&b);
        assert_eq!(kinds(&m), [(OpKind::Gelu, "tanh pattern (gelu_new)")]);
        assert_eq!(m.sites[0].anchor, "y");
    }

    #[test]
    fn decomposed_layer_norm_is_one_site_and_its_adds_are_inside() {
        let mut b = GraphBuilder::new("ln");
        b.input_f32("x", &[2, 4]);
        b.init_f32("gamma", &[4], &[1.0; 4])
            .init_f32("beta", &[4], &[0.5; 4]);
        b.scalar("two", 2.0).scalar("eps", 1e-12);
        b.node("ReduceMean", &["x"], &["mu"]);
        b.node("Sub", &["x", "mu"], &["c"]);
        b.node("Pow", &["c", "two"], &["sq"]);
        b.node("ReduceMean", &["sq"], &["var"]);
        b.node("Add", &["var", "eps"], &["ve"]);
        b.node("Sqrt", &["ve"], &["sd"]);
        b.node("Div", &["c", "sd"], &["n"]);
        b.node("Mul", &["n", "gamma"], &["g"]);
        b.node("Add", &["g", "beta"], &["y"]);
        b.output("y");
        let m = sites_of(&b);
        assert_eq!(kinds(&m), [(OpKind::LayerNorm, "decomposed pattern")]);
        assert_eq!(m.sites[0].params, ["gamma", "beta"]);
        assert_eq!(m.sites[0].anchor, "y");
    }

    #[test]
    fn rms_norm_and_silu() {
        let mut b = GraphBuilder::new("llama");
        b.input_f32("x", &[2, 4]);
        b.init_f32("w", &[4], &[1.0; 4]);
        b.scalar("two", 2.0).scalar("eps", 1e-6).scalar("one", 1.0);
        b.node("Pow", &["x", "two"], &["sq"]);
        b.node("ReduceMean", &["sq"], &["ms"]);
        b.node("Add", &["ms", "eps"], &["a"]);
        b.node("Sqrt", &["a"], &["s"]);
        b.node("Div", &["one", "s"], &["r"]);
        b.node("Mul", &["x", "r"], &["n"]);
        b.node("Mul", &["w", "n"], &["y"]);
        b.node("Sigmoid", &["y"], &["sg"]);
        b.node("Mul", &["y", "sg"], &["z"]);
        b.output("z");
        let m = sites_of(&b);
        assert_eq!(
            kinds(&m),
            [
                (OpKind::RmsNorm, "decomposed pattern"),
                (OpKind::Silu, "x*Sigmoid(x) pattern")
            ]
        );
        assert_eq!(m.sites[0].anchor, "y");
        assert_eq!(m.sites[0].params, ["w"]);
    }

    #[test]
    fn mask_bias_add_is_left_untouched_but_residual_add_is_wrapped() {
        let mut b = GraphBuilder::new("attn");
        b.input_f32("h", &[2, 4]);
        b.input_i64("attention_mask", &[2, 4]);
        b.init_f32("wq", &[4, 4], &[0.1; 16]);
        b.scalar("one", 1.0).scalar("min", f32::MIN);
        b.node("MatMul", &["h", "wq"], &["scores"]);
        b.node_with(
            "Cast",
            &["attention_mask"],
            &["mf"],
            vec![crate::builder::attr_int("to", 1)],
        );
        b.node("Sub", &["one", "mf"], &["inv"]);
        b.node("Mul", &["inv", "min"], &["bias"]);
        b.node("Add", &["scores", "bias"], &["masked"]);
        b.node("Softmax", &["masked"], &["p"]);
        b.node("Add", &["p", "h"], &["y"]);
        b.output("y");
        let m = sites_of(&b);
        assert_eq!(
            kinds(&m),
            [
                (OpKind::MatMul, "MatMul op"),
                (OpKind::Softmax, "Softmax op"),
                (OpKind::Add, "Add op")
            ]
        );
        assert_eq!(m.untouched.len(), 1);
        assert_eq!(m.untouched[0].reason, MASK_BIAS);
        assert_eq!(m.sites[0].params, ["wq"]);
    }

    #[test]
    fn huge_constant_operand_counts_as_a_mask() {
        let mut b = GraphBuilder::new("fill");
        b.input_f32("x", &[2, 4]);
        b.init_f32("w", &[4, 4], &[0.1; 16]);
        b.init_f32("fill", &[4], &[0.0, -1e9, 0.0, 0.0]);
        b.init_f32("bias", &[4], &[0.25; 4]);
        b.node("MatMul", &["x", "w"], &["s"]);
        b.node("Add", &["s", "fill"], &["m"]);
        b.node("Add", &["m", "bias"], &["y"]);
        b.output("y");
        let m = sites_of(&b);
        assert_eq!(
            kinds(&m),
            [(OpKind::MatMul, "MatMul op"), (OpKind::Add, "Add op")]
        );
        assert_eq!(m.untouched[0].reason, MASK_BIAS);
        assert_eq!(m.sites[1].params, ["bias"]);
    }

    #[test]
    fn op_kind_names_round_trip_and_errors_list_choices() {
        for k in OpKind::ALL {
            assert_eq!(k.as_str().parse::<OpKind>().unwrap(), k);
        }
        let err = "conv".parse::<OpKind>().unwrap_err();
        assert!(err.contains("matmul") && err.contains("conv"), "{err}");
    }
}
