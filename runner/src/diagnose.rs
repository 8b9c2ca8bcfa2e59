//! `suf-run diagnose`: per-SUF-node numbers for one row and a few inputs — how close each
//! node comes to the ring's edge (headroom, overflows at scale f and at 2f) and how far its
//! output drifts from the float graph at the same tensor (max abs error, cosine).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use suf_compiler::stats::NodeStats;

use crate::config::LoadedConfig;
use crate::diagnose_render as render;
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
    /// cpu or cuda; None: the config's default_device.
    pub device: Option<String>,
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
    /// False when the node recorded no statistics (tract pruned it, or its op records
    /// none): its range and overflow fields are then null, never a reassuring 0.
    pub recorded: bool,
    /// Largest |value| reaching the node's encoding (scale f), real units.
    pub max_abs: Option<f64>,
    /// log2(2^(n-1-f) / max_abs): bits to spare before values wrap at scale f.
    pub headroom_bits: Option<f64>,
    pub overflows: Option<usize>,
    /// Largest |product + bias| at scale 2f (ring products only).
    pub max_abs_2f: Option<f64>,
    /// log2(2^(n-1-2f) / max_abs_2f).
    pub headroom_2f_bits: Option<f64>,
    pub overflows_2f: Option<usize>,
    /// SIGMA softmax/LayerNorm/RMSNorm: the ring size their intermediates need, and
    /// n_bits minus that (negative: rows wrapped inside the op).
    pub internal_bits: Option<u32>,
    pub headroom_internal_bits: Option<i64>,
    pub internal_overflows: Option<usize>,
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
    /// Nodes that recorded no statistics: whether they wrapped is unknown.
    pub unrecorded: Vec<String>,
    pub nodes: Vec<NodeDiagnosis>,
}

pub fn diagnose(opts: &DiagnoseOptions) -> Result<Diagnosis> {
    if opts.examples == 0 {
        bail!("--examples must be > 0");
    }
    let level = suf::parse_level(&opts.level)?;
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
    let rewritten = suf::compile(&proto, n_bits, frac_bits, level)?;
    let normalized = suf::normalized(&proto);
    let nodes = suf_nodes(&rewritten, &normalized);
    let float_probes: Vec<String> = nodes.iter().map(|n| float_tensor(&n.tensor)).collect();
    let probes: Vec<String> = nodes.iter().map(|n| n.tensor.clone()).collect();
    let framework = suf::framework();
    let dir = model_path.parent();
    let device: crate::device::Device = opts
        .device
        .as_deref()
        .unwrap_or(&global.default_device)
        .parse()?;
    device.check()?;
    let float = Engine::with_probes_on(
        device,
        &framework,
        &normalized,
        dir,
        1,
        global.seq_len,
        &float_probes,
    )
    .context("float graph")?;
    let fixed = Engine::with_probes_on(
        device,
        &framework,
        &rewritten,
        dir,
        1,
        global.seq_len,
        &probes,
    )
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
    let out: Vec<NodeDiagnosis> = nodes
        .into_iter()
        .zip(acc)
        .map(|(node, e)| {
            let s = stats.get(&node.node);
            with_numbers(node, s, &e, fp)
        })
        .collect();
    let flagged = out
        .iter()
        .filter(|n| n.wrapped())
        .map(|n| n.node.clone())
        .collect();
    let unrecorded = out
        .iter()
        .filter(|n| !n.recorded)
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
        unrecorded,
        nodes: out,
    };
    report::write_atomic(&opts.out_json, &serde_json::to_vec_pretty(&d)?)?;
    if let Some(p) = &opts.out_md {
        report::write_atomic(p, render::to_markdown(&d).as_bytes())?;
    }
    if let Some(p) = &opts.out_svg {
        report::write_atomic(p, render::to_svg(&d).as_bytes())?;
    }
    Ok(d)
}

impl NodeDiagnosis {
    /// Wrapped at least once at f, at 2f or inside a SIGMA row op.
    pub fn wrapped(&self) -> bool {
        self.overflows.unwrap_or(0)
            + self.overflows_2f.unwrap_or(0)
            + self.internal_overflows.unwrap_or(0)
            > 0
    }
}

/// A node's numbers from what it recorded (`None`: nothing) and its error against float.
fn with_numbers(
    node: NodeDiagnosis,
    s: Option<&NodeStats>,
    e: &ErrorAcc,
    fp: suf_compiler::FixedPoint,
) -> NodeDiagnosis {
    let headroom = |bound: f64, max: f64| (max > 0.0).then(|| (bound / max).log2());
    let n_bits = fp.n_bits();
    let common = NodeDiagnosis {
        max_abs_error: e.max_abs,
        cosine: e.cosine(),
        ..node
    };
    let Some(s) = s else {
        return NodeDiagnosis {
            recorded: false,
            ..common
        };
    };
    NodeDiagnosis {
        recorded: true,
        headroom_bits: headroom(fp.real_bound(), s.max_abs),
        headroom_2f_bits: s.max_abs_2f.and_then(|m| headroom(fp.product_bound(), m)),
        max_abs: Some(s.max_abs),
        overflows: Some(s.overflows),
        max_abs_2f: s.max_abs_2f,
        overflows_2f: Some(s.overflows_2f),
        internal_bits: s.internal_bits,
        headroom_internal_bits: s.internal_bits.map(|b| i64::from(n_bits) - i64::from(b)),
        internal_overflows: Some(s.internal_overflows),
        elements: s.elements,
        ..common
    }
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
            tensor: n.output.first().cloned().unwrap_or_default(),
            recorded: false,
            max_abs: None,
            headroom_bits: None,
            overflows: None,
            max_abs_2f: None,
            headroom_2f_bits: None,
            overflows_2f: None,
            internal_bits: None,
            headroom_internal_bits: None,
            internal_overflows: None,
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

/// A probed tensor as reals: f32/f64 as they are, an i64 ring tensor decoded exactly (q * 2^-f).
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
    } else if t.datum_type() == DatumType::F64 {
        plain.as_slice::<f64>()?.to_vec()
    } else {
        plain.as_slice::<f32>()?.iter().map(|&x| x as f64).collect()
    })
}

#[derive(Debug, Clone, Default)]
pub struct ErrorAcc {
    max_abs: f64,
    dot: f64,
    aa: f64,
    bb: f64,
}

impl ErrorAcc {
    pub fn add(&mut self, a: &[f64], b: &[f64]) {
        for (&x, &y) in a.iter().zip(b) {
            self.max_abs = self.max_abs.max((x - y).abs());
            self.dot += x * y;
            self.aa += x * x;
            self.bb += y * y;
        }
    }

    pub fn cosine(&self) -> f64 {
        if self.aa == 0.0 && self.bb == 0.0 {
            1.0
        } else if self.aa == 0.0 || self.bb == 0.0 {
            0.0
        } else {
            self.dot / (self.aa.sqrt() * self.bb.sqrt())
        }
    }
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

    fn blank(name: &str) -> NodeDiagnosis {
        let mut b = suf_compiler::builder::GraphBuilder::new("g");
        b.input_f32("x", &[1]);
        b.node("Relu", &["x"], &["y"]);
        b.output("y");
        let mut m = b.build();
        let n = &mut m.graph.as_mut().unwrap().node[0];
        n.domain = suf_compiler::SUF_DOMAIN.into();
        n.name = name.into();
        suf_nodes(&m, &m).remove(0)
    }

    #[test]
    fn a_node_without_statistics_reports_unknown_not_zero_overflows() {
        let fp = suf_compiler::FixedPoint::new(20, 12).unwrap();
        let n = with_numbers(blank("quiet"), None, &ErrorAcc::default(), fp);
        assert!(!n.recorded);
        assert_eq!((n.overflows, n.max_abs), (None, None));
        let stats = NodeStats {
            max_abs: 300.0,
            overflows: 2,
            elements: 10,
            ..Default::default()
        };
        let n = with_numbers(blank("loud"), Some(&stats), &ErrorAcc::default(), fp);
        assert!(n.recorded && n.wrapped());
        assert_eq!(n.overflows, Some(2));
        // 2^(20-1-12) = 128 < 300: headroom is negative.
        assert!(n.headroom_bits.unwrap() < 0.0);
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
