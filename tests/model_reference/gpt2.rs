//! GPT2LMHeadModel (tests/fixtures/gpt2_tiny_op14.onnx): token + position embeddings,
//! pre-LN blocks with Conv1D as Gemm (bias inside), causal masked attention, gelu_new,
//! final ln_f and the lm_head MatMul, from the weights.

use crate::layers::{layernorm, merge_heads, scale_shift, Ctx, Heads, Inputs, Island, Role, Trace};
use crate::onnx::Graph;
use crate::ring::{Ring, RingTensor};
use tract_onnx::pb::ModelProto;

const LAYERS: usize = 2;
const HEADS: usize = 2;

/// Conv1D exported as Gemm on [B*T, K] rows, the bias inside; named after the Gemm output.
fn conv1d(ctx: &mut Ctx, g: &Graph, prefix: &str, x: &RingTensor) -> RingTensor {
    let node = format!("{prefix}/Gemm");
    let n = g.node(&node);
    let k = *x.shape.last().expect("rank >= 1");
    let rows = RingTensor::new(vec![x.data.len() / k, k], x.data.clone());
    ctx.linear(
        &format!("{node}_output_0"),
        &rows,
        &g.weights(&n.input[1]),
        g.attr_int(&node, "transB") == Some(1),
        Some(&g.weights(&n.input[2])),
    )
}

pub fn forward(model: &ModelProto, ring: Ring, inp: &Inputs, _island: &mut Island) -> Trace {
    let g = Graph::new(model);
    let mut ctx = Ctx::new(ring);
    let (b, t) = (inp.batch, inp.seq);
    let m = "/model/transformer";
    let tokens = ctx.embed(
        &format!("{m}/wte/Gather_output_0"),
        &g.weights("model.transformer.wte.weight"),
        &inp.input_ids,
        &[b, t],
    );
    // Position ids are a Range over the sequence, whatever the padding.
    let positions: Vec<i64> = (0..t as i64).collect();
    let pos = ctx.embed(
        &format!("{m}/wpe/Gather_output_0"),
        &g.weights("model.transformer.wpe.weight"),
        &positions,
        &[1, t],
    );
    let mut x = ctx.add(&format!("{m}/Add_output_0"), &tokens, &pos, Role::Residual);
    let hidden = x.shape[2];
    let dim = hidden / HEADS;
    // Causal, and padding keys masked.
    let mask = inp.attention_mask.clone();
    let masked = move |bi: usize, i: usize, j: usize| j > i || mask[bi * t + j] == 0;
    for l in 0..LAYERS {
        let p = format!("{m}/h.{l}");
        let h = layernorm(&mut ctx, &g, &format!("{p}/ln_1"), &x);
        let qkv = conv1d(&mut ctx, &g, &format!("{p}/attn/c_attn"), &h);
        assert_eq!(qkv.shape[1], 3 * hidden, "c_attn packs Q | K | V");
        let view = |offset: usize| Heads {
            data: &qkv.data,
            batch: b,
            seq: t,
            heads: HEADS,
            dim,
            stride: 3 * hidden,
            offset,
        };
        let a = format!("{p}/attn");
        let shift = scale_shift(g.scalar_f32(&g.node(&format!("{a}/Mul")).input[1]));
        let s = ctx.scores(&format!("{a}/Mul_output_0"), &view(0), &view(hidden), shift);
        let probs = ctx.softmax(&format!("{a}/Softmax_output_0"), &s, &masked);
        let c = ctx.context(&format!("{a}/MatMul_1_output_0"), &probs, &view(2 * hidden));
        let proj = conv1d(&mut ctx, &g, &format!("{a}/c_proj"), &merge_heads(&c));
        let proj = proj.reshape(vec![b, t, hidden]);
        x = ctx.add(&format!("{p}/Add_output_0"), &proj, &x, Role::Residual);
        let h = layernorm(&mut ctx, &g, &format!("{p}/ln_2"), &x);
        let fc = conv1d(&mut ctx, &g, &format!("{p}/mlp/c_fc"), &h);
        let width = fc.shape[1];
        let act = ctx.gelu(
            &format!("{p}/mlp/act/Mul_3_output_0"),
            &fc.reshape(vec![b, t, width]),
            true,
        );
        let mlp = conv1d(&mut ctx, &g, &format!("{p}/mlp/c_proj"), &act);
        let mlp = mlp.reshape(vec![b, t, hidden]);
        x = ctx.add(&format!("{p}/Add_1_output_0"), &x, &mlp, Role::Residual);
    }
    let x = layernorm(&mut ctx, &g, &format!("{m}/ln_f"), &x);
    let logits = ctx.linear(
        "logits.ring",
        &x,
        &g.matmul_weights("/model/lm_head/MatMul"),
        false,
        None,
    );
    ctx.decode("logits.ring", &logits);
    ctx.trace
}
