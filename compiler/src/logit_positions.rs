//! Logits only where they are read: a decoder's vocabulary projection (lm_head), computed
//! at `W` chosen positions per example instead of all `seq_len`.
//!
//! LAMBADA reads the logits at a prompt's last position (and, for whole-word accuracy, at
//! the few positions before it), yet an exported decoder projects every position onto the
//! vocabulary: for GPT-2 the lm_head is ~30% of the FLOPs, and level `output` then
//! quantizes all `seq_len x vocab` values. This rewrite gathers the rows that are read
//! before the projection, with standard ops only:
//!
//! ```text
//! hidden [B,S,H] -> Reshape [-1,H] -> Gather(axis 0, logit_positions [B*W]) -> MatMul/Gemm
//!   (-> bias Add) -> Reshape [-1,W,V] -> logits [B,W,V]
//! ```
//!
//! `logit_positions` is a new int64 graph input holding `b * S + position` for every
//! example `b` and slot `0..W`. Every op between the hidden state and the projection acts
//! on each position separately (that is what makes the projection a per-row product), so
//! the gathered rows are the same numbers the full graph computes; at levels `ring` and
//! `sigma` Reshape and Gather are pure data movement on the i64 ring tensor
//! (`transport::DATA_MOVEMENT`), so the logits read are bit-identical there. The rewrite is
//! applied to the source model, before the SUF pass, so the float and the SUF graphs get
//! the same one. `W` is recorded in the model's metadata (`WIDTH_KEY`) so that a runner
//! knows the input's length (`batch * W`).
//!
//! Encoders are not rewritten: a sequence classifier's head already reads one vector per
//! example (BERT's pooler gathers the [CLS] position before its dense layer, so the
//! classifier runs on `[B, H]`).

use anyhow::{anyhow, bail, Context, Result};
use tract_onnx::pb::{
    tensor_shape_proto::dimension::Value as DimValue, tensor_shape_proto::Dimension, type_proto,
    GraphProto, ModelProto, NodeProto, StringStringEntryProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

use crate::builder::attr_int;
use crate::graph::GraphView;
use crate::tensor::{dtype, i64_tensor};

/// The graph input the rewrite adds: int64, flat, `batch * W` entries `b * S + position`.
pub const INPUT: &str = "logit_positions";
/// Model metadata key holding `W`, the number of positions per example.
pub const WIDTH_KEY: &str = "suf.logit_positions.width";
/// The output whose producer is rewritten (the one a runner scores).
pub const OUTPUT: &str = "logits";

/// What the rewrite changed, for logs and reports.
#[derive(Debug, Clone)]
pub struct Restricted {
    pub model: ModelProto,
    /// The projection node (MatMul or Gemm) that now reads only the gathered rows.
    pub projection: String,
    pub hidden: i64,
    pub vocab: i64,
    pub width: usize,
}

/// `W` of a model this rewrite produced, or None for any other model.
pub fn width_of(model: &ModelProto) -> Result<Option<usize>> {
    let Some(entry) = model.metadata_props.iter().find(|p| p.key == WIDTH_KEY) else {
        return Ok(None);
    };
    let w: usize = entry
        .value
        .parse()
        .with_context(|| format!("metadata {WIDTH_KEY} = {:?} is not a count", entry.value))?;
    if w == 0 {
        bail!("metadata {WIDTH_KEY} is 0: at least one position per example is read");
    }
    Ok(Some(w))
}

/// Rewrites the projection that produces `logits` so that it runs on `width` gathered
/// positions per example. Errors name the node when the graph does not have the expected
/// shape (the runner's `--full-logits` is then the way to run it). Takes the model by
/// value: a large decoder's weights are not copied.
pub fn restrict(mut model: ModelProto, width: usize) -> Result<Restricted> {
    if width == 0 {
        bail!("logit positions: width must be at least 1");
    }
    if width_of(&model)?.is_some() {
        bail!("the model already computes logits at selected positions ({WIDTH_KEY} is set)");
    }
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| anyhow!("model has no graph"))?;
    let plan = Plan::find(graph)?;
    let projection = graph.node[plan.projection].name.clone();
    plan.apply(graph, width);
    model.metadata_props.retain(|p| p.key != WIDTH_KEY);
    model.metadata_props.push(StringStringEntryProto {
        key: WIDTH_KEY.into(),
        value: width.to_string(),
    });
    Ok(Restricted {
        model,
        projection,
        hidden: plan.hidden,
        vocab: plan.vocab,
        width,
    })
}

/// Where the rewrite goes: indices into `graph.node` and the projection's sizes.
struct Plan {
    output: String,
    /// The MatMul/Gemm.
    projection: usize,
    /// The node producing `output`: the projection itself or its bias Add.
    last: usize,
    hidden: i64,
    vocab: i64,
}

fn describe(n: &NodeProto) -> String {
    format!("{} `{}`", n.op_type, n.name)
}

impl Plan {
    fn find(graph: &GraphProto) -> Result<Plan> {
        let output = scored_output(graph)?;
        if graph.input.iter().any(|i| i.name == INPUT) {
            bail!("the model already has an input named \"{INPUT}\"");
        }
        if let Some(rank) = declared_rank(graph, &output) {
            if rank != 3 {
                bail!(
                    "output \"{output}\" is declared with rank {rank}; logits at selected positions need a decoder's [batch, seq, vocab]"
                );
            }
        }
        let view = GraphView::new(graph);
        let last = view.producer(&output).ok_or_else(|| {
            anyhow!("output \"{output}\" is not produced by any node (a graph input or constant)")
        })?;
        let last_node = view.node(last);
        let not_found = |why: &str| {
            anyhow!(
                "output \"{output}\" is produced by {}{why}: logits at selected positions need a MatMul or Gemm (optionally followed by a bias Add) there; run with --full-logits",
                describe(last_node)
            )
        };
        let is_product = |i: usize| matches!(view.node(i).op_type.as_str(), "MatMul" | "Gemm");
        let projection = if is_product(last) {
            last
        } else if last_node.op_type == "Add" {
            // A bias Add: one operand the product, the other a constant (position-free).
            let operands: Vec<(Option<usize>, bool)> = last_node
                .input
                .iter()
                .map(|t| (view.producer(t), view.constant(t).is_some()))
                .collect();
            match operands.as_slice() {
                [(Some(p), false), (_, true)] | [(_, true), (Some(p), false)] if is_product(*p) => {
                    *p
                }
                _ => {
                    return Err(not_found(
                        ", not a bias Add of a MatMul/Gemm and a constant",
                    ))
                }
            }
        } else {
            return Err(not_found(""));
        };
        let p = view.node(projection);
        let product_out = &p.output[0];
        if projection != last && view.consumers(product_out) != [last] {
            bail!(
                "the output of {} is read by other nodes than the bias Add {}: restricting it to selected positions would change them",
                describe(p),
                describe(last_node)
            );
        }
        if !view.consumers(&output).is_empty() {
            bail!(
                "output \"{output}\" is also read inside the graph: restricting it to selected positions would change those nodes"
            );
        }
        if p.op_type == "Gemm" && attr(p, "transA").unwrap_or(0) != 0 {
            bail!("{} has transA = 1: its rows are not positions", describe(p));
        }
        let weight = p
            .input
            .get(1)
            .ok_or_else(|| anyhow!("{} has no weight input", describe(p)))?;
        let w = view
            .initializer(weight)
            .filter(|t| t.dims.len() == 2)
            .ok_or_else(|| {
                anyhow!(
                    "the weight `{weight}` of {} is not a 2-D initializer: cannot tell the hidden and vocabulary sizes",
                    describe(p)
                )
            })?;
        let trans_b = p.op_type == "Gemm" && attr(p, "transB").unwrap_or(0) != 0;
        let (hidden, vocab) = if trans_b {
            (w.dims[1], w.dims[0])
        } else {
            (w.dims[0], w.dims[1])
        };
        Ok(Plan {
            output,
            projection,
            last,
            hidden,
            vocab,
        })
    }

    fn apply(&self, graph: &mut GraphProto, width: usize) {
        let name = |s: &str| format!("{INPUT}/{s}");
        let hidden_in = graph.node[self.projection].input[0].clone();
        let rows_shape = name("rows_shape");
        let out_shape = name("out_shape");
        let rows = name("hidden_rows");
        let read = name("hidden_read");
        let product_rows = name("logits_rows");
        graph
            .initializer
            .push(i64_tensor(&rows_shape, &[2], &[-1, self.hidden]));
        graph.initializer.push(i64_tensor(
            &out_shape,
            &[3],
            &[-1, width as i64, self.vocab],
        ));
        let node = |op: &str, n: &str, inputs: Vec<String>, output: &str| NodeProto {
            name: format!("/{INPUT}/{n}"),
            op_type: op.into(),
            input: inputs,
            output: vec![output.to_string()],
            ..Default::default()
        };
        let flatten = node(
            "Reshape",
            "Reshape_rows",
            vec![hidden_in, rows_shape],
            &rows,
        );
        let mut gather = node(
            "Gather",
            "Gather",
            vec![rows.clone(), INPUT.to_string()],
            &read,
        );
        gather.attribute.push(attr_int("axis", 0));
        let unflatten = node(
            "Reshape",
            "Reshape_out",
            vec![product_rows.clone(), out_shape],
            &self.output,
        );
        graph.node[self.projection].input[0] = read;
        graph.node[self.last].output[0] = product_rows;
        // Topological order: the gather right before the projection, the final reshape
        // right after the node that produced the output.
        graph.node.insert(self.last + 1, unflatten);
        graph.node.insert(self.projection, gather);
        graph.node.insert(self.projection, flatten);
        // Shapes recorded for the tensors whose shape changed would now be wrong.
        let product_out = graph.node[self.projection + 2].output[0].clone();
        graph
            .value_info
            .retain(|v| v.name != product_out && v.name != self.output);
        graph.input.push(ValueInfoProto {
            name: INPUT.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: dtype::INT64,
                    shape: Some(TensorShapeProto {
                        dim: vec![Dimension {
                            value: Some(DimValue::DimParam("batch_x_positions".into())),
                            ..Default::default()
                        }],
                    }),
                })),
                ..Default::default()
            }),
            doc_string: format!(
                "b * seq_len + position, {width} positions per example: where the logits are computed"
            ),
        });
        if let Some(out) = graph.output.iter_mut().find(|o| o.name == self.output) {
            set_dim(out, 1, width as i64);
        }
    }
}

fn attr(n: &NodeProto, name: &str) -> Option<i64> {
    n.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

/// `logits`, else the graph's only output (the runner scores the same one).
fn scored_output(graph: &GraphProto) -> Result<String> {
    if graph.output.iter().any(|o| o.name == OUTPUT) {
        return Ok(OUTPUT.into());
    }
    match graph.output.as_slice() {
        [only] => Ok(only.name.clone()),
        [] => bail!("model has no outputs"),
        _ => bail!(
            "model has several outputs and none is named \"{OUTPUT}\": cannot tell which logits to restrict"
        ),
    }
}

fn tensor_shape(v: &ValueInfoProto) -> Option<&TensorShapeProto> {
    let type_proto::Value::TensorType(t) = v.r#type.as_ref()?.value.as_ref()?;
    t.shape.as_ref()
}

fn declared_rank(graph: &GraphProto, output: &str) -> Option<usize> {
    let v = graph.output.iter().find(|o| o.name == output)?;
    tensor_shape(v).map(|s| s.dim.len())
}

fn set_dim(v: &mut ValueInfoProto, axis: usize, value: i64) {
    if let Some(type_proto::Value::TensorType(t)) = v.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        if let Some(d) = t.shape.as_mut().and_then(|s| s.dim.get_mut(axis)) {
            d.value = Some(DimValue::DimValue(value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::GraphBuilder;
    use crate::{compile, tract_ops, CompileOptions, Emulation, FixedPoint};
    use tract_onnx::prelude::*;

    const B: usize = 2;
    const S: usize = 4;
    const H: usize = 3;
    const V: usize = 5;

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 * 0.37 + seed).sin() * 1.5 * 4096.0).round() / 4096.0)
            .collect()
    }

    /// x -> MatMul(w1) -> h (a ring tensor at levels ring/sigma) -> MatMul(head) -> + b.
    fn decoder(bias: bool) -> GraphBuilder {
        let mut g = GraphBuilder::new("tiny_decoder");
        g.opset(17)
            .input_f32("x", &[B as i64, S as i64, H as i64])
            .output("logits")
            .init_f32("w1", &[H as i64, H as i64], &values(H * H, 0.1))
            .init_f32("head", &[H as i64, V as i64], &values(H * V, 0.7))
            .init_f32("b", &[V as i64], &values(V, 1.3));
        g.node("MatMul", &["x", "w1"], &["h"]);
        if bias {
            g.node("MatMul", &["h", "head"], &["m"]);
            g.node("Add", &["m", "b"], &["logits"]);
        } else {
            g.node("MatMul", &["h", "head"], &["logits"]);
        }
        g
    }

    /// The graph output as f64: level output's f32 widens exactly, ring levels decode to f64.
    fn run(model: &ModelProto, inputs: Vec<Tensor>) -> Vec<f64> {
        let mut m = tract_ops::onnx().model_for_proto_model(model).unwrap();
        for (i, x) in inputs.iter().enumerate() {
            m.set_input_fact(i, InferenceFact::dt_shape(x.datum_type(), x.shape()))
                .unwrap();
        }
        let plan = m.into_optimized().unwrap().into_runnable().unwrap();
        let out = plan
            .run(inputs.into_iter().map(|t| t.into_tvalue()).collect())
            .unwrap();
        out[0]
            .cast_to::<f64>()
            .unwrap()
            .try_as_plain_ram()
            .unwrap()
            .as_slice::<f64>()
            .unwrap()
            .to_vec()
    }

    fn x() -> Tensor {
        Tensor::from_shape(&[B, S, H], &values(B * S * H, 2.9)).unwrap()
    }

    /// Positions read per example (W = 2): example 0 at 3 and 1, example 1 at 0 and 2.
    const READ: [[usize; 2]; B] = [[3, 1], [0, 2]];

    fn positions() -> Tensor {
        let flat: Vec<i64> = (0..B)
            .flat_map(|b| READ[b].iter().map(move |&p| (b * S + p) as i64))
            .collect();
        Tensor::from_shape(&[flat.len()], &flat).unwrap()
    }

    /// The full logits at the positions READ names, in slot order.
    fn read_from_full(full: &[f64]) -> Vec<f64> {
        let mut out = vec![];
        for (b, ps) in READ.iter().enumerate() {
            for &p in ps {
                out.extend_from_slice(&full[(b * S + p) * V..(b * S + p + 1) * V]);
            }
        }
        out
    }

    #[test]
    fn the_gathered_logits_are_the_full_logits_at_those_positions() {
        for bias in [false, true] {
            let model = decoder(bias).build();
            let r = restrict(model.clone(), 2).unwrap();
            assert_eq!((r.hidden, r.vocab, r.width), (H as i64, V as i64, 2));
            assert_eq!(width_of(&r.model).unwrap(), Some(2));
            assert_eq!(width_of(&model).unwrap(), None);
            let full = run(&model, vec![x()]);
            let restricted = run(&r.model, vec![x(), positions()]);
            assert_eq!(restricted.len(), B * 2 * V);
            let expected = read_from_full(&full);
            let max = expected
                .iter()
                .zip(&restricted)
                .map(|(a, b)| (a - b).abs())
                .fold(0f64, f64::max);
            assert!(max <= 1e-6, "bias {bias}: max |diff| {max}");
            // The comparison can fail: slot order matters.
            let mut swapped = restricted.clone();
            swapped[..V].copy_from_slice(&restricted[V..2 * V]);
            assert_ne!(swapped, restricted);
            assert!(expected
                .iter()
                .zip(&swapped)
                .any(|(a, b)| (a - b).abs() > 1e-3));
        }
    }

    #[test]
    fn ring_levels_gather_ring_tensors_and_read_bit_identical_logits() {
        let model = decoder(true).build();
        let r = restrict(model.clone(), 2).unwrap();
        for emulation in [Emulation::Output, Emulation::Ring, Emulation::Sigma] {
            let mut opts = CompileOptions::new(FixedPoint::new(40, 12).unwrap());
            opts.emulation = emulation;
            let full = compile(&model, &opts).unwrap();
            let part = compile(&r.model, &opts).unwrap();
            if let Some(t) = &part.summary.transport {
                // Reshape and Gather moved the i64 ring tensor: no decode into float.
                assert!(t.float_islands.is_empty(), "{emulation}: {t:?}");
            }
            let graph = part.model.graph.as_ref().unwrap();
            assert!(
                graph
                    .node
                    .iter()
                    .any(|n| n.op_type == "Gather"
                        && n.input.get(1).map(String::as_str) == Some(INPUT)),
                "{emulation}: the Gather survives the SUF pass"
            );
            let a = read_from_full(&run(&full.model, vec![x()]));
            let b = run(&part.model, vec![x(), positions()]);
            if emulation == Emulation::Output {
                let max = a
                    .iter()
                    .zip(&b)
                    .map(|(p, q)| (p - q).abs())
                    .fold(0f64, f64::max);
                assert!(max <= 1e-6, "{emulation}: {max}");
            } else {
                assert_eq!(a, b, "{emulation}: ring values are integers, exact");
            }
        }
    }

    #[test]
    fn declared_output_shape_and_metadata_follow_the_rewrite() {
        let mut model = decoder(false).build();
        // An exporter's declared [batch, seq, vocab].
        let out = &mut model.graph.as_mut().unwrap().output[0];
        *out = ValueInfoProto {
            name: "logits".into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: dtype::FLOAT,
                    shape: Some(TensorShapeProto {
                        dim: ["batch", "seq", "5"]
                            .iter()
                            .map(|d| Dimension {
                                value: Some(match d.parse() {
                                    Ok(v) => DimValue::DimValue(v),
                                    Err(_) => DimValue::DimParam(d.to_string()),
                                }),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = restrict(model.clone(), 3).unwrap();
        let graph = r.model.graph.as_ref().unwrap();
        let dims = &tensor_shape(&graph.output[0]).unwrap().dim;
        assert_eq!(dims[1].value, Some(DimValue::DimValue(3)));
        assert!(graph.input.iter().any(|i| i.name == INPUT));
        let err = restrict(r.model.clone(), 3).unwrap_err().to_string();
        assert!(err.contains(WIDTH_KEY), "{err}");
        assert!(restrict(model.clone(), 0).is_err());
        // A classifier's [batch, classes] output is not a decoder's.
        let output = &mut model.graph.as_mut().unwrap().output[0];
        let Some(type_proto::Value::TensorType(t)) =
            output.r#type.as_mut().and_then(|t| t.value.as_mut())
        else {
            panic!("the output has a tensor type");
        };
        t.shape.as_mut().unwrap().dim.pop();
        let err = restrict(model.clone(), 1).unwrap_err().to_string();
        assert!(err.contains("rank 2"), "{err}");
    }

    #[test]
    fn logits_not_made_by_a_projection_are_an_error_naming_the_node() {
        let mut g = decoder(false);
        g.node("Softmax", &["logits"], &["probs"]);
        let mut model = g.build();
        let graph = model.graph.as_mut().unwrap();
        graph.output[0].name = "probs".into();
        // Renamed so that the softmax output is the one called logits.
        for n in graph.node.iter_mut() {
            for t in n.input.iter_mut().chain(n.output.iter_mut()) {
                *t = match t.as_str() {
                    "logits" => "pre".into(),
                    "probs" => "logits".into(),
                    _ => t.clone(),
                };
            }
        }
        graph.output[0].name = "logits".into();
        let err = restrict(model.clone(), 1).unwrap_err().to_string();
        assert!(err.contains("Softmax `/Softmax_2`"), "{err}");
        assert!(err.contains("--full-logits"), "{err}");

        // The product read elsewhere too: restricting it would change that reader.
        let mut g = decoder(true);
        g.node("Tanh", &["m"], &["other"]);
        let err = restrict(g.build(), 1).unwrap_err().to_string();
        assert!(err.contains("read by other nodes"), "{err}");

        // A weight that is not an initializer gives no sizes.
        let mut g = GraphBuilder::new("no_weight");
        g.input_f32("x", &[1, 2, 3])
            .input_f32("w", &[3, 4])
            .output("logits");
        g.node("MatMul", &["x", "w"], &["logits"]);
        let err = restrict(g.build(), 1).unwrap_err().to_string();
        assert!(err.contains("not a 2-D initializer"), "{err}");
    }
}
