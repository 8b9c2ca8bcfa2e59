//! suf-compile on real exporter output (tests/fixtures): SUF counts derived from each
//! model's architecture, tract runs the rewritten graph, outputs on the 2^-12 grid, the
//! float error is what f = 12 implies, and the lowered graph computes the same values.

use serde_json::Value;
use std::path::PathBuf;
use suf_compiler::{compile, tract_ops, CompileOptions, FixedPoint, ModelProto, OpKind};
use tract_onnx::prelude::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

fn module_count(structure: &Value, module: &str) -> usize {
    structure["module_counts"][module].as_u64().unwrap_or(0) as usize
}

/// Expected SUF nodes per kind, computed from the PyTorch module structure alone.
fn expected_counts(name: &str) -> Vec<(OpKind, usize)> {
    let s = json(&format!("{name}.structure.json"));
    let c = &s["config"];
    let layers = c["num_hidden_layers"]
        .as_u64()
        .or(c["n_layer"].as_u64())
        .or(c["num_layers"].as_u64())
        .unwrap() as usize;
    let linear = module_count(&s, "Linear") + module_count(&s, "Conv1D");
    let embeddings = module_count(&s, "Embedding");
    // Two attention products per layer (Q.K^T and P.V).
    let mut matmul = linear + 2 * layers;
    let residual_adds = 2 * layers;
    let arch = s["architecture"].as_str().unwrap();
    let (norm_kind, norms, act_kind, acts, adds) = match arch {
        // Linear layers on 3-D activations export as MatMul + bias Add (6 per layer);
        // the pooler and classifier (2-D) are Gemm with the bias inside.
        "BertForSequenceClassification" => (
            OpKind::LayerNorm,
            module_count(&s, "LayerNorm"),
            OpKind::Gelu,
            module_count(&s, "GELUActivation"),
            6 * layers + residual_adds + (embeddings - 1),
        ),
        // Conv1D exports as Gemm (bias inside); token + position embeddings add once.
        "GPT2LMHeadModel" => (
            OpKind::LayerNorm,
            module_count(&s, "LayerNorm"),
            OpKind::Gelu,
            module_count(&s, "NewGELUActivation"),
            residual_adds + (embeddings - 1),
        ),
        // q/k/v have no bias; out_proj, c_fc and c_proj do.
        "GPTNeoForCausalLM" => (
            OpKind::LayerNorm,
            module_count(&s, "LayerNorm"),
            OpKind::Gelu,
            module_count(&s, "NewGELUActivation"),
            3 * layers + residual_adds + (embeddings - 1),
        ),
        // No biases; rotary embedding adds q*cos + rot(q)*sin for q and k; the rotary
        // module computes its angles with one MatMul (inv_freq x positions).
        "LlamaForCausalLM" => {
            matmul += module_count(&s, "LlamaRotaryEmbedding");
            (
                OpKind::RmsNorm,
                module_count(&s, "LlamaRMSNorm"),
                OpKind::Silu,
                module_count(&s, "SiLUActivation"),
                residual_adds + 2 * layers,
            )
        }
        other => panic!("no expectation for {other}"),
    };
    vec![
        (OpKind::MatMul, matmul),
        (OpKind::Add, adds),
        (norm_kind, norms),
        (act_kind, acts),
        (OpKind::Softmax, layers),
        (OpKind::Embedding, embeddings),
    ]
}

const FIXTURES: [&str; 6] = [
    "bert_tiny_op14",
    "bert_tiny_op17",
    "gpt2_tiny_op14",
    "gpt2_tiny_op17",
    "gptneo_tiny_op17",
    "llama_tiny_op17",
];

fn compiled(name: &str, n_bits: u32, lower: bool) -> (ModelProto, suf_compiler::Summary) {
    let model = suf_compiler::load_model(&fixture(&format!("{name}.onnx"))).unwrap();
    let mut opts = CompileOptions::new(FixedPoint::new(n_bits, 12).unwrap());
    opts.lower = lower;
    let c = compile(&model, &opts).unwrap();
    (c.model, c.summary)
}

#[test]
fn suf_counts_match_the_architecture() {
    for name in FIXTURES {
        let (model, summary) = compiled(name, 37, false);
        for (kind, expected) in expected_counts(name) {
            assert_eq!(summary.count(kind), expected, "{name}: {kind}\n{summary}");
        }
        let layers = summary.count(OpKind::Softmax);
        let masks = summary
            .untouched
            .iter()
            .filter(|u| u.reason.contains("attention-mask"))
            .count();
        assert_eq!(
            masks, layers,
            "{name}: one mask-bias Add per attention layer\n{summary}"
        );
        // Every SUF node sits right after the node producing its input.
        let graph = model.graph.unwrap();
        let suf: Vec<usize> = (0..graph.node.len())
            .filter(|&i| {
                let op = &graph.node[i].op_type;
                op == suf_compiler::SUF_QUANTIZE || op == suf_compiler::SUF_QUANTIZE_BIAS
            })
            .collect();
        // A linear layer's product and bias encodings are fused into one SufQuantizeBias node.
        assert_eq!(
            suf.len() + summary.fused_bias_nodes,
            summary.total_inserted()
        );
        for i in suf {
            assert!(
                graph.node[i - 1].output.contains(&graph.node[i].input[0]),
                "{name}: node {i}"
            );
        }
    }
}

struct Ref {
    inputs: Vec<(String, Tensor)>,
}

fn reference(name: &str) -> (Ref, Value) {
    let r = json(&format!("{name}.ref.json"));
    let mut inputs = vec![];
    for (k, v) in r["inputs"].as_object().unwrap() {
        let rows: Vec<Vec<i64>> = serde_json::from_value(v.clone()).unwrap();
        let flat: Vec<i64> = rows.concat();
        let t = tract_ndarray::Array2::from_shape_vec((rows.len(), rows[0].len()), flat).unwrap();
        inputs.push((k.clone(), t.into_dyn().into_tensor()));
    }
    (Ref { inputs }, r)
}

/// Runs a model in tract with the reference inputs (fed by name, in the model's order);
/// `extra_outputs` adds tensors to read (by node name prefix).
fn run(model: &ModelProto, r: &Ref, suf_outputs: bool) -> Vec<Arc<Tensor>> {
    let mut m = tract_ops::onnx().model_for_proto_model(model).unwrap();
    let names: Vec<String> = m
        .input_outlets()
        .unwrap()
        .iter()
        .map(|o| m.node(o.node).name.clone())
        .collect();
    for (i, n) in names.iter().enumerate() {
        let t = &r.inputs.iter().find(|(k, _)| k == n).unwrap().1;
        m.set_input_fact(i, InferenceFact::dt_shape(i64::datum_type(), t.shape()))
            .unwrap();
    }
    if suf_outputs {
        let outs: Vec<OutletId> = m
            .nodes()
            .iter()
            .filter(|n| matches!(n.op.name().as_ref(), "SufQuantize" | "SufQuantizeBias"))
            .map(|n| OutletId::new(n.id, 0))
            .collect();
        m.select_output_outlets(&outs).unwrap();
    }
    let plan = m.into_optimized().unwrap().into_runnable().unwrap();
    let feeds: TVec<TValue> = names
        .iter()
        .map(|n| {
            r.inputs
                .iter()
                .find(|(k, _)| k == n)
                .unwrap()
                .1
                .clone()
                .into_tvalue()
        })
        .collect();
    plan.run(feeds)
        .unwrap()
        .into_iter()
        .map(|t| t.into_arc_tensor())
        .collect()
}

fn floats(t: &Tensor) -> Vec<f32> {
    t.cast_to::<f32>()
        .unwrap()
        .try_as_plain_ram()
        .unwrap()
        .as_slice::<f32>()
        .unwrap()
        .to_vec()
}

/// Compares tract's float logits (`shape` [batch, classes] or [batch, seq, vocab]) with
/// PyTorch's reference; a reference without either kind of data is an error, not a pass.
fn assert_pytorch_reference(name: &str, float: &[f32], shape: &[usize], json: &Value) {
    let rows = |v: &Value| -> Vec<Vec<f32>> { serde_json::from_value(v.clone()).unwrap() };
    if let Some(logits) = json.get("logits") {
        let torch: Vec<f32> = rows(logits).concat();
        assert_eq!(torch.len(), float.len(), "{name}: logits count");
        let d = max_abs_diff(float, &torch);
        assert!(d < 1e-4, "{name}: tract vs PyTorch {d}");
        return;
    }
    let (Some(argmax), Some(head), Some(lengths)) = (
        json.get("argmax"),
        json.get("last_logits_head"),
        json.get("lengths"),
    ) else {
        panic!("{name}: the reference has neither logits nor argmax/last_logits_head/lengths");
    };
    let (argmax, head) = (rows(argmax), rows(head));
    let lengths: Vec<usize> = serde_json::from_value(lengths.clone()).unwrap();
    let [batch, seq, vocab] = shape else {
        panic!("{name}: decoder logits of shape {shape:?}");
    };
    assert_eq!(
        (argmax.len(), head.len(), lengths.len()),
        (*batch, *batch, *batch)
    );
    for b in 0..*batch {
        assert_eq!(argmax[b].len(), lengths[b], "{name}: row {b}");
        for (p, &want) in argmax[b].iter().enumerate() {
            let at = &float[(b * seq + p) * vocab..(b * seq + p + 1) * vocab];
            let got = at
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 {
                        (i, v)
                    } else {
                        best
                    }
                })
                .0;
            assert_eq!(got as f32, want, "{name}: argmax at row {b} position {p}");
        }
        let last = (b * seq + lengths[b] - 1) * vocab;
        let d = max_abs_diff(&float[last..last + head[b].len()], &head[b]);
        assert!(
            d < 1e-4,
            "{name}: row {b} last-position logits, tract vs PyTorch {d}"
        );
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

#[test]
fn every_fixture_float_graph_matches_pytorch() {
    for name in FIXTURES {
        let original = suf_compiler::load_model(&fixture(&format!("{name}.onnx"))).unwrap();
        let (r, json) = reference(name);
        let out = run(&original, &r, false)[0].clone();
        assert_pytorch_reference(name, &floats(&out), out.shape(), &json);
    }
}

#[test]
fn tract_runs_rewritten_models_on_the_grid_within_the_f12_error() {
    for name in ["bert_tiny_op14", "gpt2_tiny_op17", "llama_tiny_op17"] {
        let original = suf_compiler::load_model(&fixture(&format!("{name}.onnx"))).unwrap();
        let (suf, summary) = compiled(name, 37, false);
        let (r, json) = reference(name);
        let float = floats(&run(&original, &r, false)[0]);
        // The float graph in tract matches PyTorch (the reference file): every logit for
        // the classifiers; for the decoders, the argmax at every real position and the
        // first 32 logits at the last one.
        let shape = run(&original, &r, false)[0].shape().to_vec();
        assert_pytorch_reference(name, &float, &shape, &json);
        let fixed = floats(&run(&suf, &r, false)[0]);
        assert_eq!(float.len(), fixed.len());
        let max_diff = float
            .iter()
            .zip(&fixed)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // Each SUF node moves a value by at most 2^-13; through a few dozen nodes of a
        // small random model the logits move by a few 2^-12 steps, never by whole units.
        assert!(max_diff > 0.0, "{name}: the rewrite changed nothing");
        assert!(
            max_diff < 64.0 / 4096.0,
            "{name}: |float - suf| = {max_diff}"
        );
        // Every SUF node's output lies on the 2^-12 grid (and in the 37-bit ring).
        let outs = run(&suf, &r, true);
        assert_eq!(
            outs.len(),
            summary.total_inserted() - summary.fused_bias_nodes
        );
        let fp = FixedPoint::new(37, 12).unwrap();
        for t in &outs {
            for v in floats(t) {
                assert!(fp.on_grid(v as f64), "{name}: {v} is off the grid");
            }
        }
    }
}

#[test]
fn lowered_models_compute_the_same_values_as_suf_nodes() {
    for name in ["bert_tiny_op17", "gpt2_tiny_op14"] {
        let (custom, _) = compiled(name, 37, false);
        let (lowered, summary) = compiled(name, 37, true);
        assert!(summary.lowered);
        let graph = lowered.graph.as_ref().unwrap();
        assert!(
            graph.node.iter().all(|n| n.domain.is_empty()),
            "{name}: custom node left"
        );
        let (r, _) = reference(name);
        let a = floats(&run(&custom, &r, false)[0]);
        let b = floats(&run(&lowered, &r, false)[0]);
        assert_eq!(a, b, "{name}: lowered and custom-op outputs differ");
    }
}

/// onnxruntime's outputs for the lowered models (scripts/check_lowered_ort.py, committed in
/// results/lowered_ort.json) equal tract's for the custom-op models.
#[test]
fn onnxruntime_on_lowered_models_matches_tract_on_suf_nodes() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results/lowered_ort.json");
    let ort: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for (name, expected) in ort["models"].as_object().unwrap() {
        let (custom, _) = compiled(name, 37, false);
        let (r, json) = reference(name);
        let out = run(&custom, &r, false)[0].clone();
        let values = floats(&out);
        let got: Vec<f32> = match json["lengths"].as_array() {
            None => values,
            Some(lengths) => {
                let (seq, vocab) = (out.shape()[1], out.shape()[2]);
                lengths
                    .iter()
                    .enumerate()
                    .flat_map(|(b, n)| {
                        let at = (b * seq + n.as_u64().unwrap() as usize - 1) * vocab;
                        values[at..at + 32].to_vec()
                    })
                    .collect()
            }
        };
        let want: Vec<f32> = expected
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| serde_json::from_value::<Vec<f32>>(row.clone()).unwrap())
            .collect();
        assert_eq!(got.len(), want.len(), "{name}");
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() as f64 <= 1e-9,
                "{name}: tract {g} vs onnxruntime {w}"
            );
        }
    }
}
