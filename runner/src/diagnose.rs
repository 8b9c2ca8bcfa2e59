//! `suf-run diagnose`: per-SUF-node numbers for one row and a few inputs — how close each
//! node comes to the ring's edge (headroom, overflows at scale f and at 2f) and how far its
//! output drifts from the float graph at the same tensor (max abs error, cosine).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::config::LoadedConfig;
use crate::engine::Engine;
use crate::evaluate::token_batch;
use crate::{data, report, suf, sysinfo, tokenize};

pub struct DiagnoseOptions {
    pub config: PathBuf,
    pub row: String,
    pub level: String,
    pub n_bits: Option<u32>,
    pub examples: usize,
    pub out_json: PathBuf,
    pub out_md: Option<PathBuf>,
    pub out_svg: Option<PathBuf>,
}

/// One SUF node's record.
#[derive(Debug, Clone, Serialize)]
pub struct NodeDiagnosis {
    pub index: usize,
    pub node: String,
    pub op: String,
    pub site: String,
    pub layer: Option<u32>,
    pub tensor: String,
    /// Largest |value| reaching the node's encoding (scale f), real units.
    pub max_abs: f64,
    /// log2(2^(n-1-f) / max_abs): bits to spare before values wrap at scale f.
    pub headroom_bits: Option<f64>,
    pub overflows: usize,
    /// Largest |product + bias| at scale 2f (ring products only).
    pub max_abs_2f: Option<f64>,
    /// log2(2^(n-1-2f) / max_abs_2f).
    pub headroom_2f_bits: Option<f64>,
    pub overflows_2f: usize,
    /// SIGMA softmax/LayerNorm/RMSNorm: the ring size their intermediates need, and
    /// n_bits minus that (negative: rows wrapped inside the op).
    pub internal_bits: Option<u32>,
    pub headroom_internal_bits: Option<i64>,
    pub internal_overflows: usize,
    /// Against the float graph's value of the same tensor.
    pub max_abs_error: f64,
    pub cosine: f64,
    pub elements: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    pub tool_version: String,
    pub git_commit: String,
    pub config: String,
    pub row: String,
    pub model: String,
    pub emulation: String,
    pub n_bits: u32,
    pub frac_bits: u32,
    pub examples: usize,
    pub machine: String,
    /// Nodes that wrapped at least once (at f or at 2f).
    pub flagged: Vec<String>,
    pub nodes: Vec<NodeDiagnosis>,
}

pub fn diagnose(opts: &DiagnoseOptions) -> Result<Diagnosis> {
    if opts.examples == 0 {
        bail!("--examples must be > 0");
    }
    if !suf::LEVELS.contains(&opts.level.as_str()) {
        bail!(
            "unknown emulation level \"{}\" (expected one of {})",
            opts.level,
            suf::LEVELS.join(", ")
        );
    }
    let loaded = LoadedConfig::load(&opts.config)?;
    let global = &loaded.config.global;
    let row = loaded
        .config
        .rows
        .iter()
        .find(|r| r.id == opts.row)
        .with_context(|| {
            let ids: Vec<&str> = loaded.config.rows.iter().map(|r| r.id.as_str()).collect();
            format!(
                "no row \"{}\" in {} (rows: {})",
                opts.row,
                opts.config.display(),
                ids.join(", ")
            )
        })?;
    let n_bits = opts.n_bits.unwrap_or(row.n_bits);
    let frac_bits = row.frac_bits(global);
    let model_path = loaded.resolve(&row.model);
    let examples = data::load(row.task, &loaded.resolve(&row.data))?;
    let chosen = &examples[..opts.examples.min(examples.len())];
    let tokenizer = tokenize::load_tokenizer(&loaded.resolve(&row.tokenizer))?;
    let inputs = tokenize::encode(row.family, &tokenizer, chosen, global.seq_len)?;

    let proto = suf::load_model(&model_path)?;
    let rewritten = suf::compile(&proto, n_bits, frac_bits, &opts.level)?;
    let normalized = suf::normalized(&proto);
    let nodes = suf_nodes(&rewritten, &normalized);
    let float_probes: Vec<String> = nodes.iter().map(|n| float_tensor(&n.tensor)).collect();
    let probes: Vec<String> = nodes.iter().map(|n| n.tensor.clone()).collect();
    let framework = suf::framework();
    let dir = model_path.parent();
    let float = Engine::with_probes(
        &framework,
        &normalized,
        dir,
        1,
        global.seq_len,
        &float_probes,
    )
    .context("float graph")?;
    let fixed = Engine::with_probes(&framework, &rewritten, dir, 1, global.seq_len, &probes)
        .with_context(|| format!("SUF graph ({})", opts.level))?;

    let mut acc: Vec<ErrorAcc> = vec![ErrorAcc::default(); nodes.len()];
    suf_compiler::stats::set_enabled(true);
    let run = (|| -> Result<()> {
        for i in 0..inputs.len() {
            let tb = token_batch(&inputs, i, i + 1, 1, global.seq_len);
            let a = float.run_all(&tb).context("float graph")?;
            let b = fixed.run_all(&tb).context("SUF graph")?;
            for (k, e) in acc.iter_mut().enumerate() {
                e.add(&reals(&a[k + 1], frac_bits)?, &reals(&b[k + 1], frac_bits)?);
            }
        }
        Ok(())
    })();
    suf_compiler::stats::set_enabled(false);
    let stats = suf_compiler::stats::take();
    run?;

    let fp = suf_compiler::FixedPoint::new(n_bits, frac_bits)?;
    let headroom = |bound: f64, max: f64| (max > 0.0).then(|| (bound / max).log2());
    let mut out = Vec::with_capacity(nodes.len());
    for (node, e) in nodes.into_iter().zip(acc) {
        let s = stats.get(&node.node).cloned().unwrap_or_default();
        out.push(NodeDiagnosis {
            headroom_bits: headroom(fp.real_bound(), s.max_abs),
            headroom_2f_bits: s.max_abs_2f.and_then(|m| headroom(fp.product_bound(), m)),
            max_abs: s.max_abs,
            overflows: s.overflows,
            max_abs_2f: s.max_abs_2f,
            overflows_2f: s.overflows_2f,
            internal_bits: s.internal_bits,
            headroom_internal_bits: s.internal_bits.map(|b| i64::from(n_bits) - i64::from(b)),
            internal_overflows: s.internal_overflows,
            max_abs_error: e.max_abs,
            cosine: e.cosine(),
            elements: s.elements,
            ..node
        });
    }
    let flagged = out
        .iter()
        .filter(|n| n.overflows + n.overflows_2f + n.internal_overflows > 0)
        .map(|n| n.node.clone())
        .collect();
    let d = Diagnosis {
        tool_version: env!("CARGO_PKG_VERSION").into(),
        git_commit: sysinfo::git_commit(),
        config: opts.config.display().to_string(),
        row: row.id.clone(),
        model: row.model.clone(),
        emulation: opts.level.clone(),
        n_bits,
        frac_bits,
        examples: inputs.len(),
        machine: sysinfo::machine(),
        flagged,
        nodes: out,
    };
    report::write_atomic(&opts.out_json, &serde_json::to_vec_pretty(&d)?)?;
    if let Some(p) = &opts.out_md {
        report::write_atomic(p, to_markdown(&d).as_bytes())?;
    }
    if let Some(p) = &opts.out_svg {
        report::write_atomic(p, to_svg(&d).as_bytes())?;
    }
    Ok(d)
}

/// The SUF nodes of a rewritten graph, in graph order, with the tensor each produces.
/// The float graph's name for a SUF tensor: a graph output's ring tensor is
/// `<output>.ring` (docs/ring-transport.md).
fn float_tensor(suf_tensor: &str) -> String {
    suf_tensor
        .strip_suffix(".ring")
        .unwrap_or(suf_tensor)
        .to_string()
}

/// The SUF nodes whose output has a counterpart in the float graph (decodes into float
/// islands and encodes of float operands have none).
fn suf_nodes(
    model: &suf_compiler::ModelProto,
    float: &suf_compiler::ModelProto,
) -> Vec<NodeDiagnosis> {
    let (Some(graph), Some(float)) = (model.graph.as_ref(), float.graph.as_ref()) else {
        return vec![];
    };
    let float_tensors: std::collections::HashSet<&str> = float
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    graph
        .node
        .iter()
        .filter(|n| n.domain == suf_compiler::SUF_DOMAIN)
        .filter(|n| {
            n.output
                .first()
                .is_some_and(|o| float_tensors.contains(float_tensor(o).as_str()))
        })
        .enumerate()
        .map(|(index, n)| NodeDiagnosis {
            index,
            node: n.name.clone(),
            op: n.op_type.clone(),
            site: n
                .attribute
                .iter()
                .find(|a| a.name == "site")
                .map(|a| String::from_utf8_lossy(&a.s).into_owned())
                .unwrap_or_default(),
            layer: layer_of(&n.name),
            tensor: n.output[0].clone(),
            max_abs: 0.0,
            headroom_bits: None,
            overflows: 0,
            max_abs_2f: None,
            headroom_2f_bits: None,
            overflows_2f: 0,
            internal_bits: None,
            headroom_internal_bits: None,
            internal_overflows: 0,
            max_abs_error: 0.0,
            cosine: 1.0,
            elements: 0,
        })
        .collect()
}

/// The transformer block a node belongs to, from exporter names such as
/// `/bert/encoder/layer.3/...`, `/transformer/h.11/...` or `/model/layers.0/...`.
pub fn layer_of(name: &str) -> Option<u32> {
    name.split('/').find_map(|seg| {
        let (head, num) = seg.rsplit_once('.')?;
        let head = head.rsplit('.').next().unwrap_or(head);
        matches!(head, "layer" | "layers" | "h" | "block" | "blocks")
            .then(|| num.parse().ok())
            .flatten()
    })
}

/// A probed tensor as reals: f32 as it is, an i64 ring tensor decoded exactly (q * 2^-f).
fn reals(t: &tract_onnx::prelude::TValue, frac_bits: u32) -> Result<Vec<f64>> {
    use tract_onnx::prelude::DatumType;
    let plain = t.try_as_plain_ram()?;
    Ok(if t.datum_type() == DatumType::I64 {
        let scale = suf_fixed::pow2(-(frac_bits as i32));
        plain
            .as_slice::<i64>()?
            .iter()
            .map(|&q| q as f64 * scale)
            .collect()
    } else {
        plain.as_slice::<f32>()?.iter().map(|&x| x as f64).collect()
    })
}

#[derive(Debug, Clone, Default)]
struct ErrorAcc {
    max_abs: f64,
    dot: f64,
    aa: f64,
    bb: f64,
}

impl ErrorAcc {
    fn add(&mut self, a: &[f64], b: &[f64]) {
        for (&x, &y) in a.iter().zip(b) {
            self.max_abs = self.max_abs.max((x - y).abs());
            self.dot += x * y;
            self.aa += x * x;
            self.bb += y * y;
        }
    }

    fn cosine(&self) -> f64 {
        if self.aa == 0.0 && self.bb == 0.0 {
            1.0
        } else if self.aa == 0.0 || self.bb == 0.0 {
            0.0
        } else {
            self.dot / (self.aa.sqrt() * self.bb.sqrt())
        }
    }
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

pub fn to_markdown(d: &Diagnosis) -> String {
    let mut out = format!(
        "# suf-run diagnose: {} ({}, n_bits={}, frac_bits={}, {} examples)\n\n",
        d.row, d.emulation, d.n_bits, d.frac_bits, d.examples
    );
    out.push_str(&format!(
        "model `{}` · commit `{}` · {}\n\nHeadroom is log2(2^(n-1-f) / max|x|) at scale f, log2(2^(n-1-2f) / max|y|) for products at 2f, and n minus the ring size the intermediates of a SIGMA softmax/LayerNorm need (sums, the sum of squares); negative means the ring wrapped (overflows @int counts rows). Error and cosine compare this node's output with the float graph's value of the same tensor.\n\n",
        d.model, d.git_commit, d.machine
    ));
    if d.flagged.is_empty() {
        out.push_str("No node overflowed.\n\n");
    } else {
        out.push_str(&format!(
            "**{} node(s) overflowed:** {}\n\n",
            d.flagged.len(),
            d.flagged.join(", ")
        ));
    }
    out.push_str("| # | node | site | layer | max abs | headroom (bits) | overflows | max abs @2f | headroom @2f | overflows @2f | bits @int | headroom @int | overflows @int | max abs err | cosine |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for n in &d.nodes {
        out.push_str(&format!(
            "| {} | `{}` | {} | {} | {:.4} | {} | {} | {} | {} | {} | {} | {} | {} | {:.3e} | {:.6} |\n",
            n.index,
            n.node,
            n.site,
            n.layer.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
            n.max_abs,
            fmt_opt(n.headroom_bits, 1),
            n.overflows,
            fmt_opt(n.max_abs_2f, 4),
            fmt_opt(n.headroom_2f_bits, 1),
            n.overflows_2f,
            n.internal_bits.map_or("-".to_string(), |b| b.to_string()),
            n.headroom_internal_bits.map_or("-".to_string(), |b| b.to_string()),
            n.internal_overflows,
            n.max_abs_error,
            n.cosine
        ));
    }
    out
}

const KIND_COLORS: [(&str, &str); 8] = [
    ("matmul", "#1f77b4"),
    ("add", "#ff7f0e"),
    ("layernorm", "#2ca02c"),
    ("rmsnorm", "#2ca02c"),
    ("softmax", "#d62728"),
    ("gelu", "#9467bd"),
    ("silu", "#9467bd"),
    ("embedding", "#8c564b"),
];

/// Max abs error per node (log scale) in graph order, layers shaded, overflowing nodes ringed.
pub fn to_svg(d: &Diagnosis) -> String {
    let (w, h, left, right, top, bottom) = (960.0, 420.0, 70.0, 20.0, 40.0, 60.0);
    let n = d.nodes.len().max(1) as f64;
    let floor = 1e-8f64;
    let ys: Vec<f64> = d
        .nodes
        .iter()
        .map(|x| x.max_abs_error.max(floor).log10())
        .collect();
    let (lo, hi) = (
        ys.iter()
            .cloned()
            .fold(f64::INFINITY, f64::min)
            .floor()
            .min(-4.0),
        ys.iter()
            .cloned()
            .fold(f64::NEG_INFINITY, f64::max)
            .ceil()
            .max(0.0),
    );
    let px = |i: f64| left + (w - left - right) * (i + 0.5) / n;
    let py = |v: f64| top + (h - top - bottom) * (hi - v) / (hi - lo).max(1e-9);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"20\" font-size=\"14\">{} · {} · n={} f={} · max abs error vs float per SUF node ({} examples)</text>\n",
        xml(&d.row), d.emulation, d.n_bits, d.frac_bits, d.examples
    );
    let mut start = 0;
    while start < d.nodes.len() {
        let layer = d.nodes[start].layer;
        let end = (start..d.nodes.len())
            .find(|&j| d.nodes[j].layer != layer)
            .unwrap_or(d.nodes.len());
        if let Some(l) = layer {
            let x0 = px(start as f64 - 0.5);
            let x1 = px(end as f64 - 0.5);
            let fill = if l % 2 == 0 { "#f2f2f2" } else { "#e6e6e6" };
            s.push_str(&format!(
                "<rect x=\"{x0:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{fill}\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">layer {l}</text>\n",
                x1 - x0,
                h - top - bottom,
                (x0 + x1) / 2.0,
                h - bottom + 28.0
            ));
        }
        start = end;
    }
    for e in (lo as i64)..=(hi as i64) {
        let y = py(e as f64);
        s.push_str(&format!(
            "<line x1=\"{left}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ccc\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">1e{e}</text>\n",
            w - right,
            left - 6.0,
            y + 4.0
        ));
    }
    for (i, (node, y)) in d.nodes.iter().zip(&ys).enumerate() {
        let color = KIND_COLORS
            .iter()
            .find(|(k, _)| *k == node.site)
            .map_or("#333", |(_, c)| c);
        let (cx, cy) = (px(i as f64), py(*y));
        s.push_str(&format!(
            "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"3\" fill=\"{color}\"><title>{} ({}) err {:.3e}</title></circle>\n",
            xml(&node.node),
            node.site,
            node.max_abs_error
        ));
        if node.overflows + node.overflows_2f + node.internal_overflows > 0 {
            s.push_str(&format!(
                "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"6\" fill=\"none\" stroke=\"red\" stroke-width=\"1.5\"/>\n"
            ));
        }
    }
    let mut lx = left;
    for (k, c) in KIND_COLORS
        .iter()
        .filter(|(k, _)| *k != "rmsnorm" && *k != "silu")
    {
        s.push_str(&format!(
            "<circle cx=\"{lx:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{c}\"/><text x=\"{:.1}\" y=\"{:.1}\">{k}</text>\n",
            h - 12.0,
            lx + 8.0,
            h - 8.0
        ));
        lx += 95.0;
    }
    s.push_str(&format!(
        "<circle cx=\"{lx:.1}\" cy=\"{:.1}\" r=\"6\" fill=\"none\" stroke=\"red\"/><text x=\"{:.1}\" y=\"{:.1}\">overflowed</text>\n</svg>\n",
        h - 12.0,
        lx + 10.0,
        h - 8.0
    ));
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_from_exporter_names() {
        assert_eq!(
            layer_of("/bert/encoder/layer.3/attention/self/query/MatMul/suf_ring"),
            Some(3)
        );
        assert_eq!(layer_of("/transformer/h.11/mlp/c_fc/Add"), Some(11));
        assert_eq!(layer_of("/model/layers.0/self_attn/q_proj/MatMul"), Some(0));
        assert_eq!(layer_of("/bert/embeddings/LayerNorm"), None);
    }

    #[test]
    fn cosine_of_identical_and_opposite() {
        let mut e = ErrorAcc::default();
        e.add(&[1.0, 2.0], &[1.0, 2.0]);
        assert!((e.cosine() - 1.0).abs() < 1e-12);
        assert_eq!(e.max_abs, 0.0);
        let mut e = ErrorAcc::default();
        e.add(&[1.0, 2.0], &[-1.0, -2.0]);
        assert!((e.cosine() + 1.0).abs() < 1e-12);
        assert_eq!(e.max_abs, 4.0);
    }
}
