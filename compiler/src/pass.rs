//! The insertion pass: normalise, match, encode parameters, insert SUF nodes.

use crate::builder::{attr_int, attr_string};
use crate::graph::GraphView;
pub use crate::options::{CompileOptions, Emulation};
use crate::patterns::{self, OpKind, Site, Untouched};
use crate::summary::Summary;
use crate::{
    lower, normalize, ring, sigma, tensor, transport, SUF_DOMAIN, SUF_ENCODE, SUF_QUANTIZE,
};
use anyhow::{anyhow, bail, Result};
use std::collections::{BTreeMap, HashSet};
use suf_fixed::Rounding;
use tract_onnx::pb::{ModelProto, NodeProto, OperatorSetIdProto};

pub struct Compiled {
    pub model: ModelProto,
    pub summary: Summary,
}

/// Rewrites a model: every matched op gets a SUF node on its output, and the op's float
/// parameters are encoded once.
pub fn compile(model: &ModelProto, opts: &CompileOptions) -> Result<Compiled> {
    if opts.lower && opts.emulation != Emulation::Output {
        bail!(
            "--lower emits emulation level `output` only (got `{}`): the ring levels need \
             integer products that standard ONNX ops cannot express exactly",
            opts.emulation
        );
    }
    if opts.lower && opts.fixed.n_bits() > lower::MAX_LOWERED_N_BITS {
        bail!(
            "--lower computes the ring in float64, exact only for n_bits <= {} (got {})",
            lower::MAX_LOWERED_N_BITS,
            opts.fixed.n_bits()
        );
    }
    let mut model = model.clone();
    let model_opsets = model.opset_import.clone();
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| anyhow!("model has no graph"))?;
    let normalizations = normalize::normalize(graph);
    let matches = {
        let view = GraphView::new(graph);
        patterns::find_sites(&view, opts.fixed.real_bound())?
    };
    let wanted = patterns::selected_kinds(opts.only.as_ref(), &opts.skip);
    let mut untouched = matches.untouched;
    let mut sites = vec![];
    for site in matches.sites {
        if wanted.contains(&site.kind) {
            sites.push(site);
        } else {
            let n = &graph.node[*site.nodes.iter().max().expect("site has nodes")];
            let reason = format!("{} not selected (--only/--skip)", site.kind);
            untouched.push(Untouched {
                node: n.name.clone(),
                op: n.op_type.clone(),
                reason,
            });
        }
    }
    if sites.is_empty() {
        bail!(
            "no MatMul/Gemm, LayerNorm, RMSNorm, Softmax, GELU, SiLU, Add or embedding Gather \
             to rewrite in graph `{}`",
            graph.name
        );
    }
    // SIGMA encodes weights and inputs with a C cast: toward zero.
    let sigma_opts;
    let opts = if opts.emulation == Emulation::Sigma {
        sigma_opts = CompileOptions {
            rounding: Rounding::Trunc,
            ..opts.clone()
        };
        &sigma_opts
    } else {
        opts
    };
    let carries_ring = opts.emulation.carries_ring();
    let mut ring_plan = if carries_ring {
        ring::plan(&GraphView::new(graph), &sites, opts)?
    } else {
        ring::RingPlan::default()
    };
    let mut edits = crate::graph::Edits::default();
    let sigma_plan = if carries_ring {
        let view = GraphView::new(graph);
        let folded = sigma::fold_scales(&view, &sites, &mut ring_plan, opts.fixed.frac_bits())?;
        if let Some(p) = ring_plan
            .products
            .iter()
            .find(|p| p.shift >= opts.fixed.n_bits())
        {
            bail!(
                "a {}-bit ring cannot hold the truncation by {} bits of product `{}` (f plus its folded scale)",
                opts.fixed.n_bits(),
                p.shift,
                p.output
            );
        }
        let mut plan = sigma::edit(&view, &sites, opts, opset(&model_opsets), &mut edits)?;
        plan.folded_scales = folded;
        plan
    } else {
        sigma::SigmaPlan::default()
    };
    let mut keep_float = ring_plan.biases();
    if carries_ring {
        // Every SUF op encodes its own parameters from the original floats: pre-rounding
        // them to f32 grid values would lose bits of any parameter beyond 4096.
        keep_float.extend(sites.iter().flat_map(|s| s.params.iter().cloned()));
        check_finite_parameters(graph, &sites)?;
    }
    let initializers_rewritten = encode_parameters(graph, &sites, opts, &keep_float)?;
    let product_anchors = ring_plan.covered_anchors(&sites);
    let mut covered = product_anchors.clone();
    covered.extend(sigma_plan.replaced.iter().cloned());
    if carries_ring {
        // The transport computes these Adds in the ring (SufRingAdd).
        covered.extend(
            sites
                .iter()
                .filter(|s| s.kind == OpKind::Add)
                .map(|s| s.anchor.clone()),
        );
    }
    let mut inserted = BTreeMap::new();
    let mut forms = BTreeMap::new();
    for site in &sites {
        let fused = covered.contains(&site.anchor)
            && site.kind != OpKind::MatMul
            && !sigma_plan.replaced.contains(&site.anchor);
        if carries_ring && site.kind == OpKind::Add && !product_anchors.contains(&site.anchor) {
            *forms
                .entry("add: ring addition (SufRingAdd)".to_string())
                .or_insert(0) += 1;
            *inserted.entry(site.kind).or_insert(0) += 1;
            continue;
        }
        if fused {
            *forms
                .entry(format!("{}: fused into a ring product", site.kind))
                .or_insert(0) += 1;
            continue;
        }
        *inserted.entry(site.kind).or_insert(0) += 1;
        let how = if sigma_plan.replaced.contains(&site.anchor) {
            let algorithm = if opts.emulation == Emulation::Sigma {
                "SIGMA algorithm"
            } else {
                "f64 function of the ring value"
            };
            format!("{} ({algorithm})", site.form)
        } else if covered.contains(&site.anchor) {
            format!("{} (ring product)", site.form)
        } else {
            site.form.to_string()
        };
        *forms.entry(format!("{}: {how}", site.kind)).or_insert(0) += 1;
    }
    for (node, why) in &ring_plan.kept_float {
        untouched.push(Untouched {
            node: node.clone(),
            op: "Gemm".into(),
            reason: why.clone(),
        });
    }
    if sigma_plan.folded_scales > 0 {
        *forms
            .entry("matmul: attention scale folded into the truncation".to_string())
            .or_insert(0) += sigma_plan.folded_scales;
    }
    ring::edit(graph, &ring_plan, opts, &mut edits);
    edits.apply(graph);
    let quantized: Vec<Site> = sites
        .iter()
        .filter(|s| !covered.contains(&s.anchor))
        .cloned()
        .collect();
    insert_suf_nodes(graph, &quantized, opts);
    let fused_bias_nodes = if opts.lower || carries_ring {
        0
    } else {
        crate::fuse::fuse_bias_quantize(graph)
    };
    let transport = if carries_ring {
        let mask_adds: HashSet<String> = untouched
            .iter()
            .filter(|u| u.reason == patterns::MASK_BIAS)
            .map(|u| u.node.clone())
            .collect();
        Some(transport::carry(graph, opts, &mask_adds)?)
    } else {
        None
    };
    if !model.opset_import.iter().any(|o| o.domain == SUF_DOMAIN) {
        model.opset_import.push(OperatorSetIdProto {
            domain: SUF_DOMAIN.into(),
            version: 1,
        });
    }
    if opts.lower {
        lower::lower(&mut model)?;
    }
    Ok(Compiled {
        model,
        summary: Summary {
            n_bits: opts.fixed.n_bits(),
            frac_bits: opts.fixed.frac_bits(),
            rounding: opts.rounding.to_string(),
            emulation: opts.emulation.to_string(),
            lowered: opts.lower,
            inserted,
            forms,
            initializers_rewritten,
            untouched,
            normalizations,
            fused_bias_nodes,
            transport,
        },
    })
}

/// Parameters the SUF ops will encode at run time must be finite: say so now, naming them.
fn check_finite_parameters(graph: &tract_onnx::pb::GraphProto, sites: &[Site]) -> Result<()> {
    let names: HashSet<&str> = sites
        .iter()
        .flat_map(|s| s.params.iter().map(String::as_str))
        .collect();
    for t in graph
        .initializer
        .iter()
        .filter(|t| names.contains(t.name.as_str()))
    {
        if t.data_type == tensor::dtype::FLOAT && tensor::any_f32(t, |v| !v.is_finite()) {
            bail!(
                "initializer {}: cannot encode non-finite values in fixed point",
                t.name
            );
        }
    }
    Ok(())
}

fn encode_parameters(
    graph: &mut tract_onnx::pb::GraphProto,
    sites: &[Site],
    opts: &CompileOptions,
    keep_float: &HashSet<String>,
) -> Result<usize> {
    let names: HashSet<&str> = sites
        .iter()
        .flat_map(|s| s.params.iter().map(String::as_str))
        .filter(|p| !keep_float.contains(*p))
        .collect();
    let mut count = 0;
    for t in graph
        .initializer
        .iter_mut()
        .filter(|t| names.contains(t.name.as_str()))
    {
        let name = t.name.clone();
        tensor::map_f32(t, |x| {
            opts.fixed
                .quantize(x as f64, opts.rounding)
                .map(|y| y as f32)
                .map_err(|e| anyhow!("initializer {name}: {e}"))
        })?;
        count += 1;
    }
    Ok(count)
}

/// The SUF node's attributes, shared with the lowering and the tract op.
pub fn suf_attributes(opts: &CompileOptions, site: &str) -> Vec<tract_onnx::pb::AttributeProto> {
    vec![
        attr_int("n_bits", opts.fixed.n_bits() as i64),
        attr_int("frac_bits", opts.fixed.frac_bits() as i64),
        attr_string("rounding", opts.rounding.as_str()),
        attr_string("kind", "encode"),
        attr_string("site", site),
        attr_string("emulation", opts.emulation.as_str()),
    ]
}

/// After each site's producer, rename its output to `<anchor>.float` and insert
/// `SufQuantize(<anchor>.float) -> <anchor>`: every consumer, graph outputs included,
/// then reads the quantized tensor under its old name.
fn insert_suf_nodes(graph: &mut tract_onnx::pb::GraphProto, sites: &[Site], opts: &CompileOptions) {
    let mut by_position: Vec<(usize, &Site)> = {
        let view = GraphView::new(graph);
        let mut seen = HashSet::new();
        sites
            .iter()
            .filter(|s| seen.insert(s.anchor.clone()))
            .filter_map(|s| view.producer(&s.anchor).map(|p| (p, s)))
            .collect()
    };
    by_position.sort_by_key(|(p, _)| std::cmp::Reverse(*p));
    for (p, site) in by_position {
        let float_name = format!("{}.float", site.anchor);
        let producer = &mut graph.node[p];
        for o in producer.output.iter_mut().filter(|o| **o == site.anchor) {
            o.clone_from(&float_name);
        }
        let node = NodeProto {
            name: format!("{}/suf_{}", producer.name, site.kind),
            op_type: if opts.emulation.carries_ring() {
                SUF_ENCODE
            } else {
                SUF_QUANTIZE
            }
            .into(),
            domain: SUF_DOMAIN.into(),
            input: vec![float_name],
            output: vec![site.anchor.clone()],
            attribute: suf_attributes(opts, site.kind.as_str()),
            ..Default::default()
        };
        graph.node.insert(p + 1, node);
    }
}

/// The default-domain opset a model imports (the ONNX default when none is listed).
fn opset(imports: &[OperatorSetIdProto]) -> i64 {
    imports
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(1, |o| o.version)
}
