//! Tiny deterministic ONNX models with the interface of exported Hugging Face models (a BERT
//! sequence classifier: input_ids/attention_mask/token_type_ids -> logits [B, 2]; a causal LM:
//! input_ids/attention_mask -> logits [B, S, V]). Tests use them to exercise the runner end to
//! end without a real export; they are not stand-ins for any Table 4 model.

use prost::Message;
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto::dimension,
    tensor_shape_proto::Dimension, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

/// xorshift64*: reproducible weights without a random-number dependency.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((v >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn tensor(&mut self, name: &str, dims: &[i64], scale: f32) -> TensorProto {
        let n: i64 = dims.iter().product();
        TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: DataType::Float as i32,
            float_data: (0..n).map(|_| self.next_f32() * scale).collect(),
            ..Default::default()
        }
    }
}

fn i64_tensor(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![values.len() as i64],
        data_type: DataType::Int64 as i32,
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: output.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        attribute: attrs,
        ..Default::default()
    }
}

fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

fn value_info(name: &str, elem: DataType, dims: &[&str]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d.parse::<i64>() {
                Ok(v) => dimension::Value::DimValue(v),
                Err(_) => dimension::Value::DimParam(d.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn model(graph: GraphProto) -> ModelProto {
    ModelProto {
        ir_version: 8,
        producer_name: "suf-runner synthetic".into(),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(graph),
        ..Default::default()
    }
}

/// Masked mean-free pooling classifier: embeddings (+ token types), masked sum over positions,
/// a tanh layer and a 2-class head.
pub fn bert_classifier(vocab: i64, hidden: i64, seed: u64) -> ModelProto {
    let mut rng = Rng(seed | 1);
    let inits = vec![
        rng.tensor("word_emb", &[vocab, hidden], 0.5),
        rng.tensor("type_emb", &[2, hidden], 0.5),
        rng.tensor("w1", &[hidden, hidden], 0.3),
        rng.tensor("b1", &[hidden], 0.1),
        rng.tensor("w2", &[hidden, 2], 1.0),
        rng.tensor("b2", &[2], 0.1),
        i64_tensor("axis1", &[1]),
        i64_tensor("axis2", &[2]),
    ];
    let nodes = vec![
        node("Gather", &["word_emb", "input_ids"], "we", vec![]),
        node("Gather", &["type_emb", "token_type_ids"], "te", vec![]),
        node("Add", &["we", "te"], "emb", vec![]),
        node(
            "Cast",
            &["attention_mask"],
            "maskf",
            vec![int_attr("to", DataType::Float as i64)],
        ),
        node("Unsqueeze", &["maskf", "axis2"], "mask3", vec![]),
        node("Mul", &["emb", "mask3"], "masked", vec![]),
        node(
            "ReduceSum",
            &["masked", "axis1"],
            "pooled",
            vec![int_attr("keepdims", 0)],
        ),
        node("MatMul", &["pooled", "w1"], "h0", vec![]),
        node("Add", &["h0", "b1"], "h1", vec![]),
        node("Tanh", &["h1"], "h", vec![]),
        node("MatMul", &["h", "w2"], "l0", vec![]),
        node("Add", &["l0", "b2"], "logits", vec![]),
    ];
    model(GraphProto {
        name: "synthetic_bert".into(),
        node: nodes,
        initializer: inits,
        input: ["input_ids", "attention_mask", "token_type_ids"]
            .iter()
            .map(|n| value_info(n, DataType::Int64, &["batch", "sequence"]))
            .collect(),
        output: vec![value_info("logits", DataType::Float, &["batch", "2"])],
        ..Default::default()
    })
}

/// Position-wise LM: embedding, a tanh layer, tied output projection. No attention, so every
/// position's logits depend only on its own token (enough to test gathering and scoring).
pub fn causal_lm(vocab: i64, hidden: i64, seed: u64) -> ModelProto {
    let mut rng = Rng(seed | 1);
    let inits = vec![
        rng.tensor("emb", &[vocab, hidden], 1.0),
        rng.tensor("w1", &[hidden, hidden], 0.5),
        rng.tensor("head", &[hidden, vocab], 1.0),
        i64_tensor("axis2", &[2]),
    ];
    let nodes = vec![
        node("Gather", &["emb", "input_ids"], "e", vec![]),
        node(
            "Cast",
            &["attention_mask"],
            "maskf",
            vec![int_attr("to", DataType::Float as i64)],
        ),
        node("Unsqueeze", &["maskf", "axis2"], "mask3", vec![]),
        node("Mul", &["e", "mask3"], "em", vec![]),
        node("MatMul", &["em", "w1"], "h0", vec![]),
        node("Tanh", &["h0"], "h", vec![]),
        node("MatMul", &["h", "head"], "logits", vec![]),
    ];
    model(GraphProto {
        name: "synthetic_lm".into(),
        node: nodes,
        initializer: inits,
        input: ["input_ids", "attention_mask"]
            .iter()
            .map(|n| value_info(n, DataType::Int64, &["batch", "sequence"]))
            .collect(),
        output: vec![value_info(
            "logits",
            DataType::Float,
            &["batch", "sequence", &vocab.to_string()],
        )],
        ..Default::default()
    })
}

pub fn to_bytes(m: &ModelProto) -> Vec<u8> {
    m.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, TokenBatch};

    #[test]
    fn synthetic_models_run_in_tract_with_fixed_facts() {
        let onnx = tract_onnx::onnx();
        let bert = Engine::new(&onnx, &bert_classifier(50, 8, 1), None, 2, 6).unwrap();
        assert_eq!(bert.output_shape, vec![2, 2]);
        let tb = TokenBatch {
            batch: 2,
            seq_len: 6,
            input_ids: vec![1, 2, 3, 0, 0, 0, 4, 5, 6, 7, 8, 9],
            attention_mask: vec![1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1],
            token_type_ids: vec![0; 12],
            prompt_lens: vec![],
        };
        let logits = bert.run(&tb).unwrap().view().to_f64_vec();
        assert_eq!(logits.len(), 4);
        // Masked positions must not matter: change a padded token, same logits.
        let mut tb2 = TokenBatch {
            input_ids: tb.input_ids.clone(),
            ..tb
        };
        tb2.input_ids[4] = 33;
        assert_eq!(bert.run(&tb2).unwrap().view().to_f64_vec(), logits);
        let lm = Engine::new(&onnx, &causal_lm(40, 4, 2), None, 1, 5).unwrap();
        assert_eq!(lm.output_shape, vec![1, 5, 40]);
    }
}
