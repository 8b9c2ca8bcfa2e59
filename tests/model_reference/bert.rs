//! BertForSequenceClassification (tests/fixtures/bert_tiny_op14.onnx): embeddings, post-LN
//! encoder layers, pooler (Gemm + Tanh float island) and classifier, from the weights.

use crate::layers::{layernorm, merge_heads, scale_shift, Ctx, Heads, Inputs, Island, Role, Trace};
use crate::onnx::Graph;
use crate::ring::{Ring, RingTensor};
use tract_onnx::pb::ModelProto;

const LAYERS: usize = 2;
const HEADS: usize = 2;

/// MatMul + bias Add at `prefix` (`.../query`, `.../dense`): one ring product named after
/// the bias Add's output.
fn dense(ctx: &mut Ctx, g: &Graph, prefix: &str, x: &RingTensor) -> RingTensor {
    let w = g.matmul_weights(&format!("{prefix}/MatMul"));
    let b = g.add_operand(
        &format!("{prefix}/Add"),
        &format!("{prefix}/MatMul_output_0"),
    );
    ctx.linear(&format!("{prefix}/Add_output_0"), x, &w, false, Some(&b))
}

/// A [B, T, H * D] projection read as heads.
fn heads(x: &RingTensor, dim: usize) -> Heads<'_> {
    Heads {
        data: &x.data,
        batch: x.shape[0],
        seq: x.shape[1],
        heads: HEADS,
        dim,
        stride: x.shape[2],
        offset: 0,
    }
}

pub fn forward(model: &ModelProto, ring: Ring, inp: &Inputs, island: &mut Island) -> Trace {
    let g = Graph::new(model);
    let mut ctx = Ctx::new(ring);
    let (b, t) = (inp.batch, inp.seq);
    let e = "/bert/embeddings";
    let word = ctx.embed(
        &format!("{e}/word_embeddings/Gather_output_0"),
        &g.weights("bert.embeddings.word_embeddings.weight"),
        &inp.input_ids,
        &[b, t],
    );
    let token_type = ctx.embed(
        &format!("{e}/token_type_embeddings/Gather_output_0"),
        &g.weights("bert.embeddings.token_type_embeddings.weight"),
        &inp.token_type_ids,
        &[b, t],
    );
    let sum = ctx.add(
        &format!("{e}/Add_output_0"),
        &word,
        &token_type,
        Role::Residual,
    );
    // Position ids: the exporter's buffer (arange) sliced to the sequence length.
    let positions = g.i64s(&g.node(&format!("{e}/Slice")).input[0]);
    let positions = &positions[..t];
    assert!(positions.iter().enumerate().all(|(i, &p)| p == i as i64));
    let pos = ctx.embed(
        &format!("{e}/position_embeddings/Gather_output_0"),
        &g.weights("bert.embeddings.position_embeddings.weight"),
        positions,
        &[1, t],
    );
    let sum = ctx.add(&format!("{e}/Add_1_output_0"), &sum, &pos, Role::Residual);
    let mut x = layernorm(&mut ctx, &g, &format!("{e}/LayerNorm"), &sum);
    let hidden = x.shape[2];
    let dim = hidden / HEADS;
    // BERT attends over every real token: padding keys are masked, nothing else.
    let mask = inp.attention_mask.clone();
    let masked = move |bi: usize, _i: usize, j: usize| mask[bi * t + j] == 0;
    for l in 0..LAYERS {
        let p = format!("/bert/encoder/layer.{l}");
        let a = format!("{p}/attention/self");
        let q = dense(&mut ctx, &g, &format!("{a}/query"), &x);
        let k = dense(&mut ctx, &g, &format!("{a}/key"), &x);
        let v = dense(&mut ctx, &g, &format!("{a}/value"), &x);
        let shift = scale_shift(g.scalar_f32(&g.node(&format!("{a}/Mul")).input[1]));
        let s = ctx.scores(
            &format!("{a}/Mul_output_0"),
            &heads(&q, dim),
            &heads(&k, dim),
            shift,
        );
        let probs = ctx.softmax(&format!("{a}/Softmax_output_0"), &s, &masked);
        let c = ctx.context(&format!("{a}/MatMul_1_output_0"), &probs, &heads(&v, dim));
        let merged = merge_heads(&c);
        let o = format!("{p}/attention/output");
        let d = dense(&mut ctx, &g, &format!("{o}/dense"), &merged);
        let r = ctx.add(&format!("{o}/Add_output_0"), &d, &x, Role::Residual);
        let h = layernorm(&mut ctx, &g, &format!("{o}/LayerNorm"), &r);
        let i = dense(&mut ctx, &g, &format!("{p}/intermediate/dense"), &h);
        let act = ctx.gelu(
            &format!("{p}/intermediate/intermediate_act_fn/Mul_1_output_0"),
            &i,
            false,
        );
        let d = dense(&mut ctx, &g, &format!("{p}/output/dense"), &act);
        let r = ctx.add(&format!("{p}/output/Add_output_0"), &d, &h, Role::Residual);
        x = layernorm(&mut ctx, &g, &format!("{p}/output/LayerNorm"), &r);
    }
    // Pooler: the [CLS] row (Gather index 0 on axis 1), Gemm (transB), Tanh in float.
    let cls: Vec<i64> = (0..b)
        .flat_map(|bi| x.data[bi * t * hidden..][..hidden].to_vec())
        .collect();
    let cls = RingTensor::new(vec![b, hidden], cls);
    let pool = "/bert/pooler/dense/Gemm";
    let pooled = ctx.linear(
        &format!("{pool}_output_0"),
        &cls,
        &g.weights(&g.node(pool).input[1]),
        g.attr_int(pool, "transB") == Some(1),
        Some(&g.weights(&g.node(pool).input[2])),
    );
    let decoded = ctx.decode(&format!("{pool}_output_0"), &pooled);
    let tanh = island("/bert/pooler/activation/Tanh_output_0", &decoded);
    let a = ctx.encode_f32(&tanh, pooled.shape.clone());
    let cls_gemm = "/classifier/Gemm";
    let logits = ctx.linear(
        "logits.ring",
        &a,
        &g.weights(&g.node(cls_gemm).input[1]),
        g.attr_int(cls_gemm, "transB") == Some(1),
        Some(&g.weights(&g.node(cls_gemm).input[2])),
    );
    ctx.decode("logits.ring", &logits);
    ctx.trace
}
