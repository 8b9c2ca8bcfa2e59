//! Emulation level `sigma`: SIGMA's own algorithms replace the nonlinear sites, and
//! attention's constant scale folds into the product's truncation (REFERENCES.md section 2).
//!
//! GELU/SiLU patterns become one `SufSigmaActivation` node (a descriptor lookup), Softmax,
//! LayerNorm and RMSNorm become `SufSigmaRow` nodes; their inner nodes are removed. A site
//! whose inner tensors are read elsewhere cannot be replaced and is an error, not a silent
//! fallback to float.

use crate::approx;
use crate::builder::attr_string;
use crate::graph::{Edits, GraphView};
use crate::pass::{suf_attributes, CompileOptions};
use crate::patterns::{OpKind, Site};
use crate::ring::RingPlan;
use crate::{SUF_DOMAIN, SUF_SIGMA_ACTIVATION, SUF_SIGMA_ROW};
use anyhow::{anyhow, bail, Result};
use std::collections::HashSet;
use tract_onnx::pb::NodeProto;

/// Anchors of the sites replaced by SIGMA ops (their outputs are ring values already).
#[derive(Debug, Default)]
pub struct SigmaPlan {
    pub replaced: HashSet<String>,
    /// Attention products whose scale was folded (for the summary).
    pub folded_scales: usize,
}

/// Folds a constant scalar scale after a ring product into its shift (power of two, as
/// SIGMA does for d = 64) or into a post-multiplier `T(2^f * c)` followed by a floor.
pub fn fold_scales(view: &GraphView, sites: &[Site], ring: &mut RingPlan, f: u32) -> usize {
    let in_sites: HashSet<usize> = sites
        .iter()
        .filter(|s| s.kind != OpKind::MatMul)
        .flat_map(|s| s.nodes.iter().copied())
        .collect();
    let mut folded = 0;
    for p in ring.products.iter_mut().filter(|p| p.fused_add.is_none()) {
        if view.is_output(&p.output) {
            continue;
        }
        let Some(&consumer) = view.consumers(&p.output).first() else {
            continue;
        };
        if view.consumers(&p.output).len() != 1 || in_sites.contains(&consumer) {
            continue;
        }
        let n = view.node(consumer);
        let Some(other) = view.other_input(consumer, &p.output) else {
            continue;
        };
        let Some(c) = view.scalar(other) else {
            continue;
        };
        let factor = match n.op_type.as_str() {
            "Mul" => c,
            "Div" if n.input[0] == p.output && c != 0.0 => 1.0 / c,
            _ => continue,
        };
        if !(factor > 0.0 && factor < 1.0) {
            continue;
        }
        let k = -factor.log2();
        if k.fract() == 0.0 && k <= 16.0 {
            p.shift = f + k as u32;
        } else {
            p.post_multiplier = Some((factor * f64::from(1u32 << f)).trunc() as i64);
        }
        p.folded_scale = Some(consumer);
        p.output = n.output[0].clone();
        folded += 1;
    }
    folded
}

/// Plans the replacement of every Softmax, LayerNorm, RMSNorm, GELU and SiLU site.
pub fn edit(
    view: &GraphView,
    sites: &[Site],
    opts: &CompileOptions,
    edits: &mut Edits,
) -> Result<SigmaPlan> {
    let mut plan = SigmaPlan::default();
    for site in sites {
        let (op_type, mut attribute, inputs) = match site.kind {
            OpKind::Gelu | OpKind::Silu => {
                let table = if site.kind == OpKind::Gelu {
                    "sigma-gelu"
                } else {
                    "sigma-silu"
                };
                approx::descriptor(table)?;
                let mut a = suf_attributes(opts, site.kind);
                a.push(attr_string("descriptor", table));
                (SUF_SIGMA_ACTIVATION, a, vec![site.input.clone()])
            }
            OpKind::Softmax => {
                let n = view.node(site.nodes[0]);
                let axis = n.attribute.iter().find(|a| a.name == "axis").map(|a| a.i);
                if axis != Some(-1) {
                    bail!(
                        "sigma level: Softmax {} has axis {axis:?}; SIGMA's softmax runs over the last axis (-1)",
                        n.name
                    );
                }
                let mut a = suf_attributes(opts, site.kind);
                a.push(attr_string("function", "softmax"));
                a.push(attr_string("nexp_hi", "sigma-nexp-hi"));
                a.push(attr_string("nexp_lo", "sigma-nexp-lo"));
                a.push(attr_string("reciprocal", "sigma-reciprocal-13"));
                (SUF_SIGMA_ROW, a, vec![site.input.clone()])
            }
            OpKind::LayerNorm | OpKind::RmsNorm => {
                let (gamma, beta) = norm_params(view, site)?;
                let c = view
                    .initializer(&gamma)
                    .map(|t| t.dims.iter().product::<i64>() as usize)
                    .ok_or_else(|| {
                        anyhow!(
                            "sigma level: {} scale `{gamma}` is not an initializer",
                            site.anchor
                        )
                    })?;
                let rsqrt = approx::rsqrt_name(c);
                approx::descriptor(&rsqrt)?;
                let mut a = suf_attributes(opts, site.kind);
                let function = if site.kind == OpKind::LayerNorm {
                    "layernorm"
                } else {
                    "rmsnorm"
                };
                a.push(attr_string("function", function));
                a.push(attr_string("rsqrt", &rsqrt));
                let mut inputs = vec![site.input.clone(), gamma];
                inputs.extend(beta);
                (SUF_SIGMA_ROW, a, inputs)
            }
            _ => continue,
        };
        check_self_contained(view, site)?;
        attribute.retain(|a| a.name != "kind");
        attribute.push(attr_string("kind", "sigma"));
        let last = *site.nodes.iter().max().expect("site has nodes");
        edits.replace.insert(
            last,
            NodeProto {
                name: format!("{}/suf_sigma_{}", view.node(last).name, site.kind),
                op_type: op_type.into(),
                domain: SUF_DOMAIN.into(),
                input: inputs,
                output: vec![site.anchor.clone()],
                attribute,
                ..Default::default()
            },
        );
        edits
            .remove
            .extend(site.nodes.iter().copied().filter(|&i| i != last));
        plan.replaced.insert(site.anchor.clone());
    }
    Ok(plan)
}

/// (gamma, beta) of a norm site: the fused op's inputs, or the decomposed pattern's affine
/// tail (`params`, Mul's weight first).
fn norm_params(view: &GraphView, site: &Site) -> Result<(String, Option<String>)> {
    let n = view.node(site.nodes[0]);
    if site.nodes.len() == 1 && n.op_type == "LayerNormalization" {
        let axis = n
            .attribute
            .iter()
            .find(|a| a.name == "axis")
            .map_or(-1, |a| a.i);
        if axis != -1 {
            bail!(
                "sigma level: LayerNormalization {} normalises axis {axis}, not the last",
                n.name
            );
        }
        return Ok((
            n.input[1].clone(),
            n.input.get(2).filter(|b| !b.is_empty()).cloned(),
        ));
    }
    match (site.kind, site.params.as_slice()) {
        (OpKind::LayerNorm, [g, b]) => Ok((g.clone(), Some(b.clone()))),
        (OpKind::RmsNorm, [g]) => Ok((g.clone(), None)),
        _ => bail!(
            "sigma level: {} at `{}` ({}) has no constant scale/shift SIGMA's algorithm can take",
            site.kind,
            site.anchor,
            site.form
        ),
    }
}

/// Replacing a pattern removes its inner nodes: none of their outputs may be read outside.
fn check_self_contained(view: &GraphView, site: &Site) -> Result<()> {
    let inside: HashSet<usize> = site.nodes.iter().copied().collect();
    for &i in &site.nodes {
        for out in &view.node(i).output {
            if *out == site.anchor {
                continue;
            }
            if view.is_output(out) || view.consumers(out).iter().any(|c| !inside.contains(c)) {
                bail!(
                    "sigma level: the {} pattern at `{}` has an inner tensor `{out}` read elsewhere; it cannot be replaced by one SIGMA op",
                    site.kind,
                    site.anchor
                );
            }
        }
    }
    Ok(())
}
