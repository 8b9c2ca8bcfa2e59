//! Levels `ring` and `sigma`: ring values travel between SUF nodes as i64 tensors
//! (docs/ring-transport.md). After the SUF nodes are in place, this pass walks the graph
//! from their outputs and rewrites every op that reads a ring tensor:
//!
//! - data movement (Reshape, Transpose, Gather, Concat, ...) stays, on i64;
//! - arithmetic becomes ring arithmetic (`SufRingAdd`, `SufRingMul`);
//! - the attention mask leaves the scores in the ring and travels as a float mask bias to
//!   the softmax;
//! - anything else is a float island, entered through `SufRingDecode` (exact or an error)
//!   and listed in the summary; graph outputs are decoded the same way.

use crate::arity;
use crate::builder::{attr_int, attr_string};
use crate::graph::GraphView;
use crate::options::CompileOptions;
use crate::pass::suf_attributes;
use crate::tensor::{dtype, f32_tensor};
use crate::{
    SUF_DOMAIN, SUF_ENCODE, SUF_RING_ADD, SUF_RING_DECODE, SUF_RING_FUNCTION, SUF_RING_MUL,
    SUF_SIGMA_ROW,
};
use anyhow::{bail, Result};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use tract_onnx::pb::type_proto::Value;
use tract_onnx::pb::{GraphProto, NodeProto};

/// Ops that only move data: the ring tensor is their first input, the rest are shapes,
/// indices or axes.
const DATA_MOVEMENT: [&str; 14] = [
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Slice",
    "Split",
    "Expand",
    "Identity",
    "Tile",
    "Gather",
    "GatherElements",
    "GatherND",
    "Dropout",
];

/// What the transport did, for the compile summary.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TransportReport {
    /// Original ops turned into ring ops ("Add -> SufRingAdd" -> count).
    pub rewritten: BTreeMap<String, usize>,
    /// Ops of the original model computed in float on decoded ring values.
    pub float_islands: Vec<FloatIsland>,
    /// Softmax nodes that take the attention mask as a float bias.
    pub masked_softmax: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct FloatIsland {
    pub node: String,
    pub op: String,
}

/// Scores on their way to a softmax: the ring tensor and the float mask bias so far.
#[derive(Debug, Clone)]
struct Masked {
    ring: String,
    bias: Option<String>,
}

struct Pass<'a> {
    view: GraphView<'a>,
    opts: &'a CompileOptions,
    mask_adds: &'a HashSet<String>,
    ring: HashSet<String>,
    masked: HashMap<String, Masked>,
    decoded: HashMap<String, String>,
    new_nodes: Vec<NodeProto>,
    zero: Option<String>,
    report: TransportReport,
}

/// Rewrites `graph` so that every ring value between SUF nodes is an i64 tensor.
/// `mask_adds` names the Add nodes the matcher classified as attention-mask bias.
pub fn carry(
    graph: &mut GraphProto,
    opts: &CompileOptions,
    mask_adds: &HashSet<String>,
) -> Result<TransportReport> {
    let (nodes, zero, mut report, ring) = {
        let mut pass = Pass {
            view: GraphView::new(graph),
            opts,
            mask_adds,
            ring: HashSet::new(),
            masked: HashMap::new(),
            decoded: HashMap::new(),
            new_nodes: vec![],
            zero: None,
            report: TransportReport::default(),
        };
        for i in 0..graph.node.len() {
            pass.node(i)?;
        }
        if let Some(m) = graph
            .output
            .iter()
            .find(|o| pass.masked.contains_key(&o.name))
        {
            bail!(
                "masked attention scores `{}` are a graph output: they must go through a softmax",
                m.name
            );
        }
        (pass.new_nodes, pass.zero, pass.report, pass.ring)
    };
    graph.node = nodes;
    if let Some(zero) = zero {
        graph.initializer.push(f32_tensor(&zero, &[], &[0.0]));
    }
    decode_outputs(graph, opts, &ring, &mut report);
    report.float_islands.sort();
    Ok(report)
}

/// Graph outputs that are ring tensors leave the ring through an exactness-checked decode to
/// f64 (the output's declared type becomes double); the ring tensor is renamed `<output>.ring`.
fn decode_outputs(
    graph: &mut GraphProto,
    opts: &CompileOptions,
    ring: &HashSet<String>,
    report: &mut TransportReport,
) {
    let outputs: Vec<String> = graph
        .output
        .iter()
        .map(|o| o.name.clone())
        .filter(|o| ring.contains(o))
        .collect();
    for out in outputs {
        let renamed = format!("{out}.ring");
        for n in graph.node.iter_mut() {
            for t in n.input.iter_mut().chain(n.output.iter_mut()) {
                if *t == out {
                    t.clone_from(&renamed);
                }
            }
        }
        // f64: a logit of a ring of up to 54 bits is always exact there (f32 refused real
        // models' logits beyond 4096); the decode still refuses what f64 cannot hold.
        let mut decode = suf_node(
            opts,
            SUF_RING_DECODE,
            format!("{out}/suf_decode"),
            vec![renamed],
            out.clone(),
            "output",
        );
        decode.attribute.push(attr_string("to", "f64"));
        graph.node.push(decode);
        if let Some(Value::TensorType(t)) = graph
            .output
            .iter_mut()
            .find(|o| o.name == out)
            .and_then(|o| o.r#type.as_mut())
            .and_then(|t| t.value.as_mut())
        {
            t.elem_type = dtype::DOUBLE;
        }
        *report
            .rewritten
            .entry("graph output -> SufRingDecode".into())
            .or_default() += 1;
    }
}

fn suf_node(
    opts: &CompileOptions,
    op_type: &str,
    name: String,
    input: Vec<String>,
    output: String,
    site: &str,
) -> NodeProto {
    NodeProto {
        name,
        op_type: op_type.into(),
        domain: SUF_DOMAIN.into(),
        input,
        output: vec![output],
        attribute: suf_attributes(opts, site),
        ..Default::default()
    }
}

fn is_suf(n: &NodeProto) -> bool {
    n.domain == SUF_DOMAIN
}

fn is_softmax_op(n: &NodeProto) -> bool {
    let function = n
        .attribute
        .iter()
        .find(|a| a.name == "function")
        .map(|a| a.s.as_slice());
    (n.op_type == SUF_SIGMA_ROW || n.op_type == SUF_RING_FUNCTION)
        && function == Some(b"softmax".as_slice())
}

impl Pass<'_> {
    fn count(&mut self, what: &str) {
        *self.report.rewritten.entry(what.into()).or_default() += 1;
    }

    fn mark_ring(&mut self, n: &NodeProto) {
        self.ring
            .extend(n.output.iter().filter(|o| !o.is_empty()).cloned());
    }

    fn node(&mut self, i: usize) -> Result<()> {
        let n = self.view.node(i).clone();
        let is_ring = |t: &String| self.ring.contains(t);
        let ring_inputs: Vec<usize> = (0..n.input.len())
            .filter(|&k| is_ring(&n.input[k]))
            .collect();
        let masked_inputs: Vec<usize> = (0..n.input.len())
            .filter(|&k| self.masked.contains_key(&n.input[k]))
            .collect();
        if is_suf(&n) {
            return self.suf(n, &masked_inputs);
        }
        if !masked_inputs.is_empty() {
            return self.masked_flow(n, &masked_inputs);
        }
        if ring_inputs.is_empty() {
            self.new_nodes.push(n);
            return Ok(());
        }
        // A raw proto need not have gone through the loader's arity checks.
        arity::require_inputs(&n)?;
        let op = n.op_type.as_str();
        match op {
            "Cast" if casts_to_float(&n) => {
                // A ring value already stands for a real: the cast is the identity.
                let mut id = n.clone();
                id.op_type = "Identity".into();
                id.attribute.clear();
                self.mark_ring(&id);
                self.new_nodes.push(id);
                self.count("Cast to float -> Identity");
            }
            _ if DATA_MOVEMENT.contains(&op) => {
                if ring_inputs != [0] {
                    bail!(
                        "{op} {}: a ring value is used as a shape or index operand",
                        n.name
                    );
                }
                self.mark_ring(&n);
                self.new_nodes.push(n);
            }
            "Concat" => {
                let mut n = n;
                for k in 0..n.input.len() {
                    if !self.ring.contains(&n.input[k]) {
                        n.input[k] = self.encode(&n.input[k], &n.name);
                    }
                }
                self.mark_ring(&n);
                self.new_nodes.push(n);
            }
            "Where" => self.where_op(n)?,
            "Add" | "Sub" if self.mask_adds.contains(&n.name) => {
                // Scores before any Where: the mask bias starts here.
                let (x, bias) = self.mask_operands(&n)?;
                let m = Masked {
                    ring: x,
                    bias: None,
                };
                self.add_mask(&n, m, bias)?;
            }
            "Add" | "Sub" => {
                let mut node = self.ring_op(&n, SUF_RING_ADD, "add")?;
                if op == "Sub" {
                    node.attribute.push(attr_int("sub", 1));
                }
                self.count(&format!("{op} -> SufRingAdd"));
                self.mark_ring(&node);
                self.new_nodes.push(node);
            }
            "Mul" => {
                let node = self.ring_op(&n, SUF_RING_MUL, "mul")?;
                self.count("Mul -> SufRingMul");
                self.mark_ring(&node);
                self.new_nodes.push(node);
            }
            "Div" if ring_inputs == [0] => {
                let mut node = self.ring_op(&n, SUF_RING_MUL, "mul")?;
                node.attribute.push(attr_int("reciprocal_b", 1));
                self.count("Div -> SufRingMul (by the reciprocal)");
                self.mark_ring(&node);
                self.new_nodes.push(node);
            }
            "Neg" => {
                let zero = self.zero();
                let mut node = suf_node(
                    self.opts,
                    SUF_RING_ADD,
                    format!("{}/suf_ring", n.name),
                    vec![zero, arity::input(&n, 0)?.to_string()],
                    arity::output(&n, 0)?.to_string(),
                    "add",
                );
                node.attribute.push(attr_int("sub", 1));
                self.count("Neg -> SufRingAdd");
                self.mark_ring(&node);
                self.new_nodes.push(node);
            }
            // Shapes of a ring tensor are the shapes of the real tensor.
            "Shape" | "Size" => self.new_nodes.push(n),
            _ => self.float_island(n),
        }
        Ok(())
    }

    /// A SUF node reads ring or float tensors as they are; a masked softmax input becomes
    /// (scores, mask bias).
    fn suf(&mut self, mut n: NodeProto, masked_inputs: &[usize]) -> Result<()> {
        if !masked_inputs.is_empty() {
            if masked_inputs != [0] || !is_softmax_op(&n) || n.input.len() != 1 {
                bail!(
                    "masked attention scores reach {} {}, which is not a softmax",
                    n.op_type,
                    n.name
                );
            }
            let m = self.masked[&n.input[0]].clone();
            n.input = std::iter::once(m.ring).chain(m.bias).collect();
            self.report.masked_softmax += 1;
        }
        if n.op_type != SUF_RING_DECODE {
            self.mark_ring(&n);
        }
        self.new_nodes.push(n);
        Ok(())
    }

    /// Masked scores may pass another mask (Where or Add) on their way to the softmax.
    fn masked_flow(&mut self, n: NodeProto, masked_inputs: &[usize]) -> Result<()> {
        let op = n.op_type.as_str();
        match op {
            "Add" if self.mask_adds.contains(&n.name) && masked_inputs.len() == 1 => {
                let (scores, bias) = match (masked_inputs[0], n.input.as_slice()) {
                    (0, [a, b]) => (a, b.clone()),
                    (1, [a, b]) => (b, a.clone()),
                    _ => bail!(
                        "attention-mask {} has {} inputs; Add needs 2",
                        arity::describe(&n),
                        n.input.len()
                    ),
                };
                let m = self.masked[scores].clone();
                self.add_mask(&n, m, bias)
            }
            "Where" => self.where_op(n),
            _ => bail!(
                "masked attention scores reach {op} {}, which is not a softmax",
                n.name
            ),
        }
    }

    /// (scores, float bias) of a mask Add whose scores are a ring tensor.
    fn mask_operands(&self, n: &NodeProto) -> Result<(String, String)> {
        match n.input.as_slice() {
            [a, b] if self.ring.contains(a) && !self.ring.contains(b) => Ok((a.clone(), b.clone())),
            [a, b] if self.ring.contains(b) && !self.ring.contains(a) && n.op_type == "Add" => {
                Ok((b.clone(), a.clone()))
            }
            _ => bail!(
                "attention-mask {} {} does not add a float bias to ring scores",
                n.op_type,
                n.name
            ),
        }
    }

    /// out = scores + bias: the bias joins the float mask bias.
    fn add_mask(&mut self, n: &NodeProto, m: Masked, bias: String) -> Result<()> {
        let out = arity::output(n, 0)?.to_string();
        let combined = match m.bias {
            None => bias,
            Some(prev) => {
                let out = format!("{}/suf_mask_bias", n.name);
                self.new_nodes.push(NodeProto {
                    name: format!("{}/suf_mask", n.name),
                    op_type: "Add".into(),
                    input: vec![prev, bias],
                    output: vec![out.clone()],
                    ..Default::default()
                });
                out
            }
        };
        self.masked.insert(
            out,
            Masked {
                ring: m.ring,
                bias: Some(combined),
            },
        );
        Ok(())
    }

    /// Where(cond, a, b) with a ring branch: a fill beyond the ring (a mask) makes masked
    /// scores; any other float branch is encoded.
    fn where_op(&mut self, mut n: NodeProto) -> Result<()> {
        if n.input.len() != 3 {
            bail!("Where {} has {} inputs, expected 3", n.name, n.input.len());
        }
        let where_out = arity::output(&n, 0)?.to_string();
        if self.ring.contains(&n.input[0]) {
            bail!("Where {}: a ring value is used as the condition", n.name);
        }
        let bound = self.opts.fixed.real_bound();
        let fill = |k: usize| {
            self.view
                .constant(&n.input[k])
                .is_some_and(|v| v.iter().any(|x| !x.is_finite() || x.abs() >= bound))
        };
        let branch = |k: usize| -> Option<Masked> {
            let t = &n.input[k];
            if let Some(m) = self.masked.get(t) {
                Some(m.clone())
            } else if self.ring.contains(t) {
                Some(Masked {
                    ring: t.clone(),
                    bias: None,
                })
            } else {
                None
            }
        };
        let (live, fill_at) = match (branch(1), branch(2)) {
            (Some(m), None) if fill(2) => (m, 2),
            (None, Some(m)) if fill(1) => (m, 1),
            _ => {
                if n.input[1..].iter().any(|t| self.masked.contains_key(t)) {
                    bail!(
                        "Where {}: masked attention scores meet another value before the softmax",
                        n.name
                    );
                }
                for k in 1..3 {
                    if !self.ring.contains(&n.input[k]) {
                        n.input[k] = self.encode(&n.input[k], &n.name);
                    }
                }
                self.mark_ring(&n);
                self.new_nodes.push(n);
                return Ok(());
            }
        };
        let keep = match live.bias {
            Some(b) => b,
            None => self.zero(),
        };
        let mut inputs = vec![n.input[0].clone(), keep.clone(), keep];
        inputs[fill_at] = n.input[fill_at].clone();
        let out = format!("{}/suf_mask_bias", n.name);
        self.new_nodes.push(NodeProto {
            name: format!("{}/suf_mask", n.name),
            op_type: "Where".into(),
            input: inputs,
            output: vec![out.clone()],
            ..Default::default()
        });
        self.masked.insert(
            where_out,
            Masked {
                ring: live.ring,
                bias: Some(out),
            },
        );
        self.count("Where with a mask fill -> softmax mask bias");
        Ok(())
    }

    /// The same operands, as a SUF ring op.
    fn ring_op(&self, n: &NodeProto, op_type: &str, site: &str) -> Result<NodeProto> {
        Ok(suf_node(
            self.opts,
            op_type,
            format!("{}/suf_ring", n.name),
            n.input.clone(),
            arity::output(n, 0)?.to_string(),
            site,
        ))
    }

    /// A float tensor that joins ring values is encoded first.
    fn encode(&mut self, t: &str, at: &str) -> String {
        let out = format!("{t}.suf_enc");
        if !self.ring.contains(&out) {
            self.new_nodes.push(suf_node(
                self.opts,
                SUF_ENCODE,
                format!("{at}/suf_encode_{t}"),
                vec![t.to_string()],
                out.clone(),
                "encode",
            ));
            self.ring.insert(out.clone());
            self.count("float operand -> SufEncode");
        }
        out
    }

    /// An op of the original model computed in float on decoded ring values.
    fn float_island(&mut self, mut n: NodeProto) {
        for k in 0..n.input.len() {
            let t = n.input[k].clone();
            if !self.ring.contains(&t) {
                continue;
            }
            let decoded = match self.decoded.get(&t) {
                Some(d) => d.clone(),
                None => {
                    let d = format!("{t}.f32");
                    self.new_nodes.push(suf_node(
                        self.opts,
                        SUF_RING_DECODE,
                        format!("{}/suf_decode_{k}", n.name),
                        vec![t.clone()],
                        d.clone(),
                        "decode",
                    ));
                    self.decoded.insert(t, d.clone());
                    d
                }
            };
            n.input[k] = decoded;
        }
        self.report.float_islands.push(FloatIsland {
            node: n.name.clone(),
            op: n.op_type.clone(),
        });
        self.new_nodes.push(n);
    }

    fn zero(&mut self) -> String {
        self.zero
            .get_or_insert_with(|| "suf.zero".to_string())
            .clone()
    }
}

fn casts_to_float(n: &NodeProto) -> bool {
    n.attribute
        .iter()
        .any(|a| a.name == "to" && matches!(a.i as i32, dtype::FLOAT | dtype::DOUBLE | 10 | 16))
}
