//! The nonlinear sites at levels `ring` and `sigma`, replaced whole, and attention's
//! constant scale folded into the product's truncation (REFERENCES.md section 2).
//!
//! Level `sigma`: GELU/SiLU patterns become one `SufSigmaActivation` node (a descriptor
//! lookup), Softmax, LayerNorm and RMSNorm become `SufSigmaRow` nodes. Level `ring`: each
//! becomes one `SufRingFunction` node (the exact function in f64 of the ring value). The
//! inner nodes are removed. A site whose inner tensors are read elsewhere cannot be
//! replaced and is an error, not a silent fallback to float.

use crate::approx;
use crate::arity;
use crate::builder::{attr_float, attr_string};
use crate::graph::{Edits, GraphView};
use crate::options::{CompileOptions, Emulation};
use crate::pass::suf_attributes;
use crate::patterns::{OpKind, Site};
use crate::ring::RingPlan;
use crate::{SUF_DOMAIN, SUF_RING_FUNCTION, SUF_SIGMA_ACTIVATION, SUF_SIGMA_ROW};
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
/// A scaling node without an output is an error naming it.
pub fn fold_scales(view: &GraphView, sites: &[Site], ring: &mut RingPlan, f: u32) -> Result<usize> {
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
            "Div" if n.input.first() == Some(&p.output) && c != 0.0 => 1.0 / c,
            _ => continue,
        };
        if !(factor > 0.0 && factor < 1.0) {
            continue;
        }
        let scaled = arity::output(n, 0)?.to_string();
        let k = -factor.log2();
        if k.fract() == 0.0 && k <= 16.0 {
            p.shift = f + k as u32;
        } else {
            p.post_multiplier = Some((factor * f64::from(1u32 << f)).trunc() as i64);
        }
        p.folded_scale = Some(consumer);
        p.output = scaled;
        folded += 1;
    }
    Ok(folded)
}

/// Plans the replacement of every Softmax, LayerNorm, RMSNorm, GELU and SiLU site.
/// `opset` is the model's default-domain opset (it decides Softmax's default axis).
pub fn edit(
    view: &GraphView,
    sites: &[Site],
    opts: &CompileOptions,
    opset: i64,
    edits: &mut Edits,
) -> Result<SigmaPlan> {
    let sigma = opts.emulation == Emulation::Sigma;
    let mut plan = SigmaPlan::default();
    for site in sites {
        let mut attribute = suf_attributes(opts, site.kind.as_str());
        let (op_type, inputs) = match site.kind {
            OpKind::Gelu | OpKind::Silu if sigma => {
                let table = if site.kind == OpKind::Gelu {
                    "sigma-gelu"
                } else {
                    "sigma-silu"
                };
                approx::descriptor(table)?;
                attribute.push(attr_string("descriptor", table));
                (SUF_SIGMA_ACTIVATION, vec![site.input.clone()])
            }
            OpKind::Gelu | OpKind::Silu => {
                attribute.push(attr_string("function", float_activation(view, site)?));
                (SUF_RING_FUNCTION, vec![site.input.clone()])
            }
            OpKind::Softmax => {
                check_softmax_axis(view.node(site.nodes[0]), opset)?;
                attribute.push(attr_string("function", "softmax"));
                if sigma {
                    attribute.push(attr_string("nexp_hi", "sigma-nexp-hi"));
                    attribute.push(attr_string("nexp_lo", "sigma-nexp-lo"));
                    attribute.push(attr_string("reciprocal", "sigma-reciprocal-13"));
                    (SUF_SIGMA_ROW, vec![site.input.clone()])
                } else {
                    (SUF_RING_FUNCTION, vec![site.input.clone()])
                }
            }
            OpKind::LayerNorm | OpKind::RmsNorm => {
                let (gamma, beta) = norm_params(view, site)?;
                let function = if site.kind == OpKind::LayerNorm {
                    "layernorm"
                } else {
                    "rmsnorm"
                };
                attribute.push(attr_string("function", function));
                let op_type = if sigma {
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
                    attribute.push(attr_string("rsqrt", &rsqrt));
                    SUF_SIGMA_ROW
                } else {
                    attribute.push(attr_float("epsilon", norm_epsilon(view, site)? as f32));
                    SUF_RING_FUNCTION
                };
                let mut inputs = vec![site.input.clone(), gamma];
                inputs.extend(beta);
                (op_type, inputs)
            }
            _ => continue,
        };
        check_self_contained(view, site)?;
        if sigma {
            attribute.retain(|a| a.name != "kind");
            attribute.push(attr_string("kind", "sigma"));
        }
        let last = *site.nodes.iter().max().expect("site has nodes");
        let suffix = if sigma { "sigma" } else { "ring" };
        edits.replace.insert(
            last,
            NodeProto {
                name: format!("{}/suf_{suffix}_{}", view.node(last).name, site.kind),
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

/// SIGMA's softmax (and ours) runs over the last axis. Without an `axis` attribute that is
/// the default from opset 13 on; before it, the default axis 1 flattens the trailing axes.
fn check_softmax_axis(n: &NodeProto, opset: i64) -> Result<()> {
    let axis = n.attribute.iter().find(|a| a.name == "axis").map(|a| a.i);
    match axis {
        Some(-1) => Ok(()),
        None if opset >= 13 => Ok(()),
        _ => bail!(
            "Softmax {} has axis {} (opset {opset}); the ring levels run softmax over the last axis (-1)",
            n.name,
            axis.map_or("default 1".to_string(), |a| a.to_string()),
        ),
    }
}

/// Which float function a GELU/SiLU site computes at level `ring`.
fn float_activation(view: &GraphView, site: &Site) -> Result<&'static str> {
    Ok(match (site.kind, site.form) {
        (OpKind::Silu, _) => "silu",
        (OpKind::Gelu, "erf pattern") => "gelu_erf",
        (OpKind::Gelu, "tanh pattern (gelu_new)") => "gelu_tanh",
        (OpKind::Gelu, _) => {
            let n = view.node(site.nodes[0]);
            let approximate = n
                .attribute
                .iter()
                .find(|a| a.name == "approximate")
                .map(|a| String::from_utf8_lossy(&a.s).into_owned());
            match approximate.as_deref() {
                None | Some("none") => "gelu_erf",
                Some("tanh") => "gelu_tanh",
                Some(other) => bail!("Gelu {} has approximate = `{other}`", n.name),
            }
        }
        _ => bail!("{} is not an activation", site.kind),
    })
}

/// The epsilon of a norm site: the fused op's attribute, or the constant the decomposed
/// pattern adds before its Sqrt.
fn norm_epsilon(view: &GraphView, site: &Site) -> Result<f64> {
    for &i in &site.nodes {
        let n = view.node(i);
        match n.op_type.as_str() {
            "LayerNormalization" | "SimplifiedLayerNormalization" | "RMSNormalization" => {
                return Ok(n
                    .attribute
                    .iter()
                    .find(|a| a.name == "epsilon")
                    .map_or(1e-5, |a| a.f as f64));
            }
            "Add"
                if n.output
                    .first()
                    .is_some_and(|o| view.sole_consumer_op(o, "Sqrt").is_some()) =>
            {
                if let Some(eps) = n.input.iter().find_map(|t| view.scalar(t)) {
                    return Ok(eps);
                }
            }
            _ => {}
        }
    }
    bail!(
        "{} at `{}` ({}): no epsilon found in the pattern",
        site.kind,
        site.anchor,
        site.form
    )
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
            arity::input(n, 1)?.to_string(),
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
