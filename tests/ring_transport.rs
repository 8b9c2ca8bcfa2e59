//! Levels `ring` and `sigma` carry ring values between SUF nodes as i64 tensors
//! (docs/ring-transport.md): crafted graphs whose values an f32 cannot hold, row widths
//! with no shipped rsqrt table, Softmax without an axis, and a -inf mask table.

use suf_compiler::builder::{attr_int, GraphBuilder};
use suf_compiler::{compile, tract_ops, CompileOptions, Emulation, FixedPoint, ModelProto};
use tract_onnx::prelude::*;

fn opts(n_bits: u32, emulation: Emulation) -> CompileOptions {
    let mut o = CompileOptions::new(FixedPoint::new(n_bits, 12).unwrap());
    o.emulation = emulation;
    o
}

fn run(model: &ModelProto, inputs: Vec<Tensor>) -> TractResult<TVec<TValue>> {
    let mut m = tract_ops::onnx().model_for_proto_model(model)?;
    for (i, x) in inputs.iter().enumerate() {
        m.set_input_fact(i, InferenceFact::dt_shape(x.datum_type(), x.shape()))?;
    }
    let plan = m.into_optimized()?.into_runnable()?;
    plan.run(inputs.into_iter().map(|t| t.into_tvalue()).collect())
}

/// A graph output as f64: f32 outputs (level output) widen exactly; f64 ones (the exact
/// decode of levels ring and sigma) stay as they are.
fn f64s(t: &TValue) -> Vec<f64> {
    t.cast_to::<f64>()
        .unwrap()
        .try_as_plain_ram()
        .unwrap()
        .as_slice::<f64>()
        .unwrap()
        .to_vec()
}

/// y = (x MatMul w) + x + big: a residual sum whose exact value (on the 2^-12 grid, beyond
/// 4096) has more significant bits than an f32 holds, read back through a second product.
fn residual(big: f32) -> ModelProto {
    let mut g = GraphBuilder::new("residual");
    g.opset(17)
        .input_f32("x", &[1, 2])
        .output("y")
        .init_f32("w", &[2, 2], &[1.0, 0.0, 0.0, 1.0])
        .init_f32("big", &[2], &[big, big])
        .init_f32("w2", &[2, 1], &[1.0, -1.0]);
    g.node("MatMul", &["x", "w"], &["h"]);
    g.node("Add", &["h", "big"], &["hb"]);
    g.node("Add", &["hb", "x"], &["r"]);
    g.node("MatMul", &["r", "w2"], &["y"]);
    g.build()
}

#[test]
fn residual_values_beyond_f32_stay_exact_in_the_ring() {
    // x = [2^-12, 0]: the residual holds [2^20 + 2 * 2^-12, 2^20]. f32's spacing at 2^20 is
    // 2^-3, so through f32 both entries would be 2^20 and y would be 0.
    let model = residual(1_048_576.0);
    let x = tensor2(&[[1.0f32 / 4096.0, 0.0]]);
    for emulation in [Emulation::Ring, Emulation::Sigma] {
        let compiled = compile(&model, &opts(50, emulation)).unwrap().model;
        let y = run(&compiled, vec![x.clone()]).unwrap();
        assert_eq!(
            f64s(&y[0]),
            [2.0 / 4096.0],
            "{emulation}: the two residual entries differ by 2 * 2^-12"
        );
    }
}

/// y = (x MatMul [[1]] + x) + big, one element. `big` joins through a ring Add at scale f,
/// not as the product's bias at 2f (which would wrap beyond 2^(n-1-2f), as the ring does).
fn big_output(big: f32) -> ModelProto {
    let mut g = GraphBuilder::new("big_output");
    g.opset(17)
        .input_f32("x", &[1, 1])
        .output("y")
        .init_f32("w", &[1, 1], &[1.0])
        .init_f32("big", &[1], &[big]);
    g.node("MatMul", &["x", "w"], &["h"]);
    g.node("Add", &["h", "x"], &["r"]);
    g.node("Add", &["r", "big"], &["y"]);
    g.build()
}

#[test]
fn graph_outputs_leave_the_ring_as_exact_f64() {
    // y = 2^20 + 2 * 2^-12 has 32 significant bits: f32 would round it to 2^20 (it used
    // to be refused); the f64 decode carries it exactly.
    let x = tensor2(&[[1.0f32 / 4096.0]]);
    for emulation in [Emulation::Ring, Emulation::Sigma] {
        let compiled = compile(&big_output(1_048_576.0), &opts(50, emulation))
            .unwrap()
            .model;
        let y = run(&compiled, vec![x.clone()]).unwrap();
        assert_eq!(y[0].datum_type(), DatumType::F64, "{emulation}");
        let plain = y[0].try_as_plain_ram().unwrap();
        assert_eq!(
            plain.as_slice::<f64>().unwrap(),
            [1_048_576.0 + 2.0 / 4096.0]
        );
    }
}

#[test]
fn a_graph_output_f64_cannot_hold_is_an_error_naming_the_node() {
    // At n = 64, y = 2^45 + 2 * 2^-12 is the ring integer 2^57 + 2: 57 significant bits,
    // more than f64's 53, so the decode must refuse it rather than round.
    let compiled = compile(
        &big_output(35_184_372_088_832.0),
        &opts(64, Emulation::Ring),
    )
    .unwrap()
    .model;
    let e = run(&compiled, vec![tensor2(&[[1.0f32 / 4096.0]])]).unwrap_err();
    let msg = format!("{e:?}");
    assert!(
        msg.contains("y/suf_decode") && msg.contains("cannot be carried exactly in f64"),
        "{msg}"
    );
}

/// x[1, 2, C] -> LayerNormalization(gamma, beta) -> MatMul.
fn layernorm(c: usize) -> ModelProto {
    let mut g = GraphBuilder::new("ln");
    let gamma: Vec<f32> = (0..c).map(|i| 1.0 + (i % 7) as f32 / 8.0).collect();
    let beta: Vec<f32> = (0..c).map(|i| (i % 5) as f32 / 16.0).collect();
    let w: Vec<f32> = (0..c).map(|i| ((i % 3) as f32 - 1.0) / 4.0).collect();
    g.opset(17)
        .input_f32("x", &[1, 2, c as i64])
        .output("y")
        .init_f32("gamma", &[c as i64], &gamma)
        .init_f32("beta", &[c as i64], &beta)
        .init_f32("w", &[c as i64, 1], &w);
    g.node_with(
        "LayerNormalization",
        &["x", "gamma", "beta"],
        &["n"],
        vec![attr_int("axis", -1)],
    );
    g.node("MatMul", &["n", "w"], &["y"]);
    g.build()
}

#[test]
fn sigma_layernorm_of_unshipped_widths_compiles_and_runs() {
    for c in [512usize, 960] {
        let compiled = compile(&layernorm(c), &opts(50, Emulation::Sigma))
            .unwrap_or_else(|e| panic!("width {c}: {e:#}"));
        let x: Vec<f32> = (0..2 * c).map(|i| ((i * 37) % 101) as f32 / 25.0).collect();
        let x = tract_ndarray::Array3::from_shape_vec((1, 2, c), x)
            .unwrap()
            .into_tensor();
        let y = f64s(&run(&compiled.model, vec![x]).unwrap()[0]);
        assert_eq!(y.len(), 2);
        assert!(y.iter().all(|v| v.is_finite() && v.abs() < 1e3), "{y:?}");
    }
}

#[test]
fn softmax_without_axis_is_the_last_axis_from_opset_13() {
    let mut g = GraphBuilder::new("softmax");
    g.opset(17)
        .input_f32("x", &[1, 4])
        .output("y")
        .init_f32("w", &[4, 4], &[0.25; 16]);
    g.node("MatMul", &["x", "w"], &["s"]);
    g.node("Softmax", &["s"], &["p"]);
    g.node("MatMul", &["p", "w"], &["y"]);
    let model = g.build();
    for emulation in [Emulation::Ring, Emulation::Sigma] {
        let c = compile(&model, &opts(37, emulation)).unwrap();
        assert!(
            c.summary.to_string().contains("softmax: Softmax op"),
            "{}",
            c.summary
        );
    }
    // Before opset 13 the default axis (1) flattens the trailing axes: refused.
    let mut old = model.clone();
    old.opset_import[0].version = 11;
    let e = compile(&old, &opts(37, Emulation::Sigma))
        .err()
        .expect("refused");
    assert!(format!("{e:#}").contains("axis"), "{e:#}");
}

/// Scores = ids' embeddings x W; a -inf table (the exporter's mask) is gathered by the same
/// ids and added to the scores before the softmax.
fn mask_table_model() -> ModelProto {
    let mut g = GraphBuilder::new("mask_table");
    g.opset(17)
        .input_i64("ids", &[1, 3])
        .output("y")
        .init_f32(
            "emb",
            &[4, 2],
            &[0.5, 0.25, -0.5, 1.0, 0.75, -0.25, 0.125, 0.5],
        )
        .init_f32(
            "mask_table",
            &[4, 3],
            &[
                0.0,
                0.0,
                0.0,
                0.0,
                f32::NEG_INFINITY,
                0.0,
                0.0,
                0.0,
                f32::NEG_INFINITY,
                0.0,
                0.0,
                0.0,
            ],
        )
        .init_f32("wk", &[2, 3], &[1.0, 0.5, -0.5, 0.25, 1.0, 0.5])
        .init_f32("wo", &[3, 1], &[1.0, 2.0, 4.0]);
    g.node("Gather", &["emb", "ids"], &["e"]);
    g.node("MatMul", &["e", "wk"], &["scores"]);
    g.node("Gather", &["mask_table", "ids"], &["bias"]);
    g.node("Add", &["scores", "bias"], &["masked"]);
    g.node_with("Softmax", &["masked"], &["p"], vec![attr_int("axis", -1)]);
    g.node("MatMul", &["p", "wo"], &["y"]);
    g.build()
}

#[test]
fn a_minus_infinity_table_feeding_the_scores_is_mask_bias() {
    let model = mask_table_model();
    let ids = tensor2(&[[1i64, 2, 0]]);
    for emulation in [Emulation::Output, Emulation::Ring, Emulation::Sigma] {
        let c =
            compile(&model, &opts(37, emulation)).unwrap_or_else(|e| panic!("{emulation}: {e:#}"));
        let summary = c.summary.to_string();
        assert!(
            summary.contains("attention-mask bias (table `mask_table`"),
            "{emulation}: {summary}"
        );
        let y = f64s(&run(&c.model, vec![ids.clone()]).unwrap()[0]);
        // Row 0 (id 1) masks column 1, row 1 (id 2) masks column 2: weighted means of wo's
        // entries over the live columns, so each lies within [1, 4].
        assert!(
            y.iter().all(|v| (1.0 - 1e-3..=4.0 + 1e-3).contains(v)),
            "{emulation}: {y:?}"
        );
    }
}

#[test]
fn non_finite_values_elsewhere_are_still_an_error() {
    // The same -inf table, now read as data (multiplied, not added to scores).
    let mut g = GraphBuilder::new("bad_table");
    g.opset(17)
        .input_i64("ids", &[1, 2])
        .output("y")
        .init_f32("emb", &[2, 2], &[0.5, f32::NEG_INFINITY, 1.0, 0.0])
        .init_f32("w", &[2, 1], &[1.0, 1.0]);
    g.node("Gather", &["emb", "ids"], &["e"]);
    g.node("MatMul", &["e", "w"], &["y"]);
    let model = g.build();
    for emulation in [Emulation::Output, Emulation::Ring, Emulation::Sigma] {
        let e = compile(&model, &opts(37, emulation))
            .err()
            .expect("refused");
        let msg = format!("{e:#}");
        assert!(
            msg.contains("non-finite") && msg.contains("emb"),
            "{emulation}: {msg}"
        );
    }
}
