//! Level `output`, for speed: `SufQuantize -> Add(bias) -> SufQuantize` (a linear layer's
//! product, its bias, and the two encodings SPEC.md asks for) becomes one
//! `SufQuantizeBias` node computing q(q(x) + b) in a single pass over the tensor.
//! The f32 addition is the one the Add computed, so the values are bit for bit the same.

use crate::builder::attr_string;
use crate::graph::{Edits, GraphView};
use crate::{SUF_QUANTIZE, SUF_QUANTIZE_BIAS};
use tract_onnx::pb::{GraphProto, NodeProto};

fn site(n: &NodeProto) -> Option<String> {
    n.attribute
        .iter()
        .find(|a| a.name == "site")
        .map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

/// Fuses every matching chain; returns how many.
pub fn fuse_bias_quantize(graph: &mut GraphProto) -> usize {
    let mut edits = Edits::default();
    {
        let view = GraphView::new(graph);
        for (i, q1) in graph.node.iter().enumerate() {
            if q1.op_type != SUF_QUANTIZE || site(q1).as_deref() != Some("matmul") {
                continue;
            }
            // A SufQuantize from the input model may lack its operand or output: no match.
            let (Some(x), Some(a)) = (q1.input.first(), q1.output.first()) else {
                continue;
            };
            let Some(add) = view.sole_consumer_op(a, "Add") else {
                continue;
            };
            if view.is_output(a) {
                continue;
            }
            let Some(bias) = view.other_input(add, a) else {
                continue;
            };
            let rank1 = view
                .initializer(bias)
                .is_some_and(|t| t.dims.len() == 1 && t.data_type == crate::tensor::dtype::FLOAT);
            let Some(sum) = view.node(add).output.first() else {
                continue;
            };
            let Some(q2) = view.sole_consumer_op(sum, SUF_QUANTIZE) else {
                continue;
            };
            if !rank1 || view.is_output(sum) || site(view.node(q2)).as_deref() != Some("add") {
                continue;
            }
            let old = view.node(q2);
            let mut attribute = old.attribute.clone();
            attribute.retain(|a| a.name != "site");
            attribute.push(attr_string("site", "matmul+add"));
            edits.replace.insert(
                q2,
                NodeProto {
                    name: old.name.clone(),
                    op_type: SUF_QUANTIZE_BIAS.into(),
                    domain: old.domain.clone(),
                    input: vec![x.clone(), bias.to_string()],
                    output: old.output.clone(),
                    attribute,
                    ..Default::default()
                },
            );
            edits.remove.extend([i, add]);
        }
    }
    let fused = edits.replace.len();
    edits.apply(graph);
    fused
}
