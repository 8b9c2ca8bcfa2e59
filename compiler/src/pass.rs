//! The insertion pass: normalise, match, encode parameters, insert SUF nodes.

use crate::builder::{attr_int, attr_string};
use crate::graph::GraphView;
use crate::patterns::{self, OpKind, Site, Untouched};
use crate::summary::Summary;
use crate::{lower, normalize, ring, sigma, tensor, SUF_DOMAIN, SUF_QUANTIZE};
use anyhow::{anyhow, bail, Result};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::str::FromStr;
use suf_fixed::{FixedPoint, Rounding};
use tract_onnx::pb::{ModelProto, NodeProto, OperatorSetIdProto};

/// How faithfully SUF nodes emulate the secure computation (SPEC.md section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Emulation {
    /// Ops in float, every matched op's output encoded and wrapped (FuseFSS's emulation).
    Output,
    /// Products at scale 2f wrapped in the ring, then floor-truncated.
    Ring,
    /// `ring` plus SIGMA's own nonlinear approximations.
    Sigma,
}

impl Emulation {
    pub fn as_str(self) -> &'static str {
        match self {
            Emulation::Output => "output",
            Emulation::Ring => "ring",
            Emulation::Sigma => "sigma",
        }
    }
}

impl fmt::Display for Emulation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Emulation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "output" => Ok(Emulation::Output),
            "ring" => Ok(Emulation::Ring),
            "sigma" => Ok(Emulation::Sigma),
            _ => Err(format!(
                "unknown emulation level `{s}` (expected output, ring or sigma)"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CompileOptions {
    pub fixed: FixedPoint,
    pub rounding: Rounding,
    pub emulation: Emulation,
    /// Only these op kinds get SUF nodes (None: all).
    pub only: Option<BTreeSet<OpKind>>,
    pub skip: BTreeSet<OpKind>,
    /// Emit standard ONNX ops instead of custom SUF nodes.
    pub lower: bool,
}

impl CompileOptions {
    pub fn new(fixed: FixedPoint) -> Self {
        CompileOptions {
            fixed,
            rounding: Rounding::Round,
            emulation: Emulation::Output,
            only: None,
            skip: BTreeSet::new(),
            lower: false,
        }
    }
}

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
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| anyhow!("model has no graph"))?;
    let normalizations = normalize::normalize(graph);
    let matches = {
        let view = GraphView::new(graph);
        patterns::find_sites(&view, opts.fixed.real_bound())
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
    let mut ring_plan = if opts.emulation == Emulation::Output {
        ring::RingPlan::default()
    } else {
        ring::plan(&GraphView::new(graph), &sites, opts)
    };
    let mut edits = crate::graph::Edits::default();
    let sigma_plan = if opts.emulation == Emulation::Sigma {
        let view = GraphView::new(graph);
        let folded = sigma::fold_scales(&view, &sites, &mut ring_plan, opts.fixed.frac_bits());
        let mut plan = sigma::edit(&view, &sites, opts, &mut edits)?;
        plan.folded_scales = folded;
        plan
    } else {
        sigma::SigmaPlan::default()
    };
    let mut keep_float = ring_plan.biases();
    for site in sites
        .iter()
        .filter(|s| sigma_plan.replaced.contains(&s.anchor))
    {
        // The SIGMA op encodes its own parameters (beta at scale 2f).
        keep_float.extend(site.params.iter().cloned());
    }
    let initializers_rewritten = encode_parameters(graph, &sites, opts, &keep_float)?;
    let mut covered = ring_plan.covered_anchors(&sites);
    covered.extend(sigma_plan.replaced.iter().cloned());
    let mut inserted = BTreeMap::new();
    let mut forms = BTreeMap::new();
    for site in &sites {
        let fused = covered.contains(&site.anchor)
            && site.kind != OpKind::MatMul
            && !sigma_plan.replaced.contains(&site.anchor);
        if fused {
            *forms
                .entry(format!("{}: fused into a ring product", site.kind))
                .or_insert(0) += 1;
            continue;
        }
        *inserted.entry(site.kind).or_insert(0) += 1;
        let how = if sigma_plan.replaced.contains(&site.anchor) {
            format!("{} (SIGMA algorithm)", site.form)
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
    let fused_bias_nodes = if opts.lower {
        0
    } else {
        crate::fuse::fuse_bias_quantize(graph)
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
        },
    })
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
pub fn suf_attributes(opts: &CompileOptions, site: OpKind) -> Vec<tract_onnx::pb::AttributeProto> {
    vec![
        attr_int("n_bits", opts.fixed.n_bits() as i64),
        attr_int("frac_bits", opts.fixed.frac_bits() as i64),
        attr_string("rounding", opts.rounding.as_str()),
        attr_string("kind", "encode"),
        attr_string("site", site.as_str()),
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
            op_type: SUF_QUANTIZE.into(),
            domain: SUF_DOMAIN.into(),
            input: vec![float_name],
            output: vec![site.anchor.clone()],
            attribute: suf_attributes(opts, site.kind),
            ..Default::default()
        };
        graph.node.insert(p + 1, node);
    }
}
