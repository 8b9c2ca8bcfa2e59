//! Emulation levels `ring` and `sigma`: matrix products move into the ring.
//!
//! Each MatMul/Gemm site becomes one `SufRingMatMul` node. A bias that follows the product
//! (MatMul then Add of a rank-1 initializer, or Gemm's C) is fused into it, so it is added
//! at scale 2f before the truncation, as SIGMA does; its Add node and SUF node disappear.

use crate::arity;
use crate::builder::{attr_int, attr_string};
use crate::graph::{Edits, GraphView};
use crate::pass::{suf_attributes, CompileOptions};
use crate::patterns::{OpKind, Site};
use crate::{SUF_DOMAIN, SUF_RING_MATMUL};
use anyhow::Result;
use std::collections::HashSet;
use tract_onnx::pb::{GraphProto, NodeProto};

/// One product to compute in the ring.
#[derive(Debug, Clone)]
pub struct RingProduct {
    /// The MatMul/Gemm node.
    pub node: usize,
    pub a: String,
    pub b: String,
    pub bias: Option<String>,
    pub trans_b: bool,
    /// The Add node whose bias was fused (removed from the graph).
    pub fused_add: Option<usize>,
    /// The tensor the fused node produces (the Add's output when a bias was fused).
    pub output: String,
    /// Truncation shift (f; SIGMA folds attention's power-of-two scale into it).
    pub shift: u32,
    /// A node scaling the product by a constant that was folded into `shift` or
    /// `post_multiplier` (removed from the graph).
    pub folded_scale: Option<usize>,
    pub post_multiplier: Option<i64>,
}

#[derive(Debug, Default)]
pub struct RingPlan {
    pub products: Vec<RingProduct>,
    /// MatMul sites computed in float after all (and why): they keep their SufQuantize.
    pub kept_float: Vec<(String, String)>,
}

impl RingPlan {
    /// Anchors that need no SufQuantize: the ring product already is a ring value.
    pub fn covered_anchors(&self, sites: &[Site]) -> HashSet<String> {
        let nodes: HashSet<usize> = self
            .products
            .iter()
            .flat_map(|p| [Some(p.node), p.fused_add, p.folded_scale])
            .flatten()
            .collect();
        sites
            .iter()
            .filter(|s| s.nodes.iter().any(|n| nodes.contains(n)))
            .map(|s| s.anchor.clone())
            .collect()
    }

    /// Biases stay float in the initializers: the op encodes them at scale 2f.
    pub fn biases(&self) -> HashSet<String> {
        self.products
            .iter()
            .filter_map(|p| p.bias.clone())
            .collect()
    }
}

/// Decides, for every MatMul site, how it becomes a ring product. A product node short of
/// its operands or output is an error naming it.
pub fn plan(view: &GraphView, sites: &[Site], opts: &CompileOptions) -> Result<RingPlan> {
    let mut plan = RingPlan::default();
    let add_sites: HashSet<usize> = sites
        .iter()
        .filter(|s| s.kind == OpKind::Add)
        .flat_map(|s| s.nodes.iter().copied())
        .collect();
    for site in sites.iter().filter(|s| s.kind == OpKind::MatMul) {
        let i = site.nodes[0];
        let n = view.node(i);
        let f = opts.fixed.frac_bits();
        let (a, b, out) = (
            arity::input(n, 0)?,
            arity::input(n, 1)?,
            arity::output(n, 0)?,
        );
        let product = match n.op_type.as_str() {
            "MatMul" => {
                let (bias, fused_add, output) = match fusable_bias(view, out, &add_sites) {
                    Some((add, bias)) => (
                        Some(bias),
                        Some(add),
                        arity::output(view.node(add), 0)?.to_string(),
                    ),
                    None => (None, None, out.to_string()),
                };
                RingProduct {
                    node: i,
                    a: a.to_string(),
                    b: b.to_string(),
                    bias,
                    trans_b: false,
                    fused_add,
                    output,
                    shift: f,
                    folded_scale: None,
                    post_multiplier: None,
                }
            }
            "Gemm" => match gemm_product(view, i, [a, b, out], f) {
                Ok(p) => p,
                Err(why) => {
                    plan.kept_float.push((n.name.clone(), why));
                    continue;
                }
            },
            other => {
                plan.kept_float
                    .push((n.name.clone(), format!("{other} is not a matrix product")));
                continue;
            }
        };
        plan.products.push(product);
    }
    Ok(plan)
}

/// MatMul -> Add(bias): the MatMul's output `out` has one consumer, a data Add whose other
/// operand is a rank-1 float initializer.
fn fusable_bias(
    view: &GraphView,
    out: &str,
    add_sites: &HashSet<usize>,
) -> Option<(usize, String)> {
    if view.is_output(out) {
        return None;
    }
    let add = view.sole_consumer_op(out, "Add")?;
    if !add_sites.contains(&add) {
        return None;
    }
    let bias = view.other_input(add, out)?;
    let t = view.initializer(bias)?;
    (t.dims.len() == 1 && t.data_type == crate::tensor::dtype::FLOAT)
        .then(|| (add, bias.to_string()))
}

/// Gemm node `i` with operands A, B and output Y as a ring product, or why it stays float.
fn gemm_product(
    view: &GraphView,
    i: usize,
    [a, b, output]: [&str; 3],
    f: u32,
) -> std::result::Result<RingProduct, String> {
    let n = view.node(i);
    let float = |name: &str, default: f32| {
        n.attribute
            .iter()
            .find(|a| a.name == name)
            .map_or(default, |a| a.f)
    };
    let int = |name: &str| {
        n.attribute
            .iter()
            .find(|a| a.name == name)
            .map_or(0, |a| a.i)
    };
    if float("alpha", 1.0) != 1.0 || float("beta", 1.0) != 1.0 {
        return Err("Gemm with alpha or beta != 1 is computed in float".into());
    }
    if int("transA") != 0 {
        return Err("Gemm with transA is computed in float".into());
    }
    let bias = n.input.get(2).filter(|c| !c.is_empty()).cloned();
    if let Some(c) = &bias {
        let rank1 = view
            .initializer(c)
            .is_some_and(|t| t.dims.len() == 1 && t.data_type == crate::tensor::dtype::FLOAT);
        if !rank1 {
            return Err(
                "Gemm whose C is not a rank-1 float initializer is computed in float".into(),
            );
        }
    }
    Ok(RingProduct {
        node: i,
        a: a.to_string(),
        b: b.to_string(),
        bias,
        trans_b: int("transB") != 0,
        fused_add: None,
        output: output.to_string(),
        shift: f,
        folded_scale: None,
        post_multiplier: None,
    })
}

/// Each product's node becomes `SufRingMatMul`; fused nodes go.
pub fn edit(graph: &GraphProto, plan: &RingPlan, opts: &CompileOptions, edits: &mut Edits) {
    for p in &plan.products {
        let old = &graph.node[p.node];
        let mut attribute = suf_attributes(opts, OpKind::MatMul.as_str());
        attribute.push(attr_int("shift", p.shift as i64));
        attribute.push(attr_string("truncation", truncation(opts).as_str()));
        if p.trans_b {
            attribute.push(attr_int("trans_b", 1));
        }
        if let Some(c) = p.post_multiplier {
            attribute.push(attr_int("post_multiplier", c));
        }
        let mut input = vec![p.a.clone(), p.b.clone()];
        input.extend(p.bias.clone());
        edits.replace.insert(
            p.node,
            NodeProto {
                name: format!("{}/suf_ring", old.name),
                op_type: SUF_RING_MATMUL.into(),
                domain: SUF_DOMAIN.into(),
                input,
                output: vec![p.output.clone()],
                attribute,
                ..Default::default()
            },
        );
        edits.remove.extend(p.fused_add);
        edits.remove.extend(p.folded_scale);
    }
}

/// The rule that brings 2f products back to scale f: floor, the arithmetic right shift
/// the FSS protocols compute (SIGMA's `TrFloor`), at both ring levels.
pub fn truncation(_opts: &CompileOptions) -> suf_fixed::Rounding {
    suf_fixed::Rounding::Floor
}
