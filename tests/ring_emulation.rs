//! Emulation level `ring` against level `output` on crafted graphs run in tract.
//!
//! Where every float op is exact (operands on coarse dyadic grids, so f32 sums hold them) and
//! nothing overflows, the ring's products (at 2f, floor truncation) and additions and the
//! float-then-floor quantization must agree bit for bit. (Level `ring` computes softmax and
//! LayerNorm in f64 from the ring value, level `output` in f32, so those are compared in
//! tests/model_reference.rs against an integer reference instead.) Where the ring is too
//! small for the 2f products, the ring wraps while `output` does not, and the node
//! statistics say so.

use proptest::prelude::*;
use suf_compiler::builder::{attr_int, GraphBuilder};
use suf_compiler::{
    compile, stats, tract_ops, CompileOptions, Emulation, FixedPoint, ModelProto, Rounding,
};
use tract_onnx::prelude::*;

/// The node statistics are process-wide: tests that record them take turns.
static STATS: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Rng(u64);

impl Rng {
    /// A multiple of 2^-bits in [-range, range].
    fn grid(&mut self, bits: i32, range: f32) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let steps = (range * 2f32.powi(bits)) as i64;
        let k = ((self.0 >> 33) as i64 % (2 * steps + 1)) - steps;
        k as f32 / 2f32.powi(bits)
    }

    fn vec(&mut self, n: usize, bits: i32, range: f32) -> Vec<f32> {
        (0..n).map(|_| self.grid(bits, range)).collect()
    }
}

/// x[2, 4, 8] -> MatMul + bias -> MatMul + bias -> + x: only products and additions.
fn linear_block(seed: u64) -> ModelProto {
    let mut r = Rng(seed);
    let mut g = GraphBuilder::new("ring_linear");
    g.opset(17)
        .input_f32("x", &[2, 4, 8])
        .output("y")
        .init_f32("w1", &[8, 16], &r.vec(128, 4, 1.0))
        .init_f32("b1", &[16], &r.vec(16, 4, 1.0))
        .init_f32("w2", &[16, 8], &r.vec(128, 4, 2.0))
        .init_f32("b2", &[8], &r.vec(8, 4, 1.0));
    g.node("MatMul", &["x", "w1"], &["h1"]);
    g.node("Add", &["h1", "b1"], &["h1b"]);
    g.node("MatMul", &["h1b", "w2"], &["h2"]);
    g.node("Add", &["h2", "b2"], &["h2b"]);
    g.node("Add", &["h2b", "x"], &["y"]);
    g.build()
}

/// x[2, 4, 8] -> MatMul + bias -> Softmax -> MatMul + bias -> + x -> LayerNormalization.
fn block(seed: u64) -> ModelProto {
    let mut r = Rng(seed);
    let mut g = GraphBuilder::new("ring_block");
    g.opset(17)
        .input_f32("x", &[2, 4, 8])
        .output("y")
        .init_f32("w1", &[8, 16], &r.vec(128, 4, 1.0))
        .init_f32("b1", &[16], &r.vec(16, 4, 1.0))
        .init_f32("w2", &[16, 8], &r.vec(128, 4, 2.0))
        .init_f32("b2", &[8], &r.vec(8, 4, 1.0))
        .init_f32("gamma", &[8], &r.vec(8, 4, 2.0))
        .init_f32("beta", &[8], &r.vec(8, 4, 1.0));
    g.node("MatMul", &["x", "w1"], &["h1"]);
    g.node("Add", &["h1", "b1"], &["h1b"]);
    g.node_with("Softmax", &["h1b"], &["p"], vec![attr_int("axis", -1)]);
    g.node("MatMul", &["p", "w2"], &["h2"]);
    g.node("Add", &["h2", "b2"], &["h2b"]);
    g.node("Add", &["h2b", "x"], &["res"]);
    g.node_with(
        "LayerNormalization",
        &["res", "gamma", "beta"],
        &["y"],
        vec![attr_int("axis", -1)],
    );
    g.build()
}

fn rewrite(model: &ModelProto, n_bits: u32, emulation: Emulation) -> ModelProto {
    let mut opts = CompileOptions::new(FixedPoint::new(n_bits, 12).unwrap());
    opts.rounding = Rounding::Floor;
    opts.emulation = emulation;
    compile(model, &opts).unwrap().model
}

/// The graph output as f64 (level output's f32 widens exactly; levels ring and sigma decode
/// to f64), so levels compare bit for bit.
fn run(model: &ModelProto, x: &Tensor) -> Vec<f64> {
    let mut m = tract_ops::onnx().model_for_proto_model(model).unwrap();
    m.set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), x.shape()))
        .unwrap();
    let plan = m.into_optimized().unwrap().into_runnable().unwrap();
    let out = plan.run(tvec!(x.clone().into_tvalue())).unwrap();
    out[0]
        .cast_to::<f64>()
        .unwrap()
        .try_as_plain_ram()
        .unwrap()
        .as_slice::<f64>()
        .unwrap()
        .to_vec()
}

fn ops(model: &ModelProto) -> Vec<String> {
    model
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| n.op_type.clone())
        .collect()
}

#[test]
fn ring_rewrite_fuses_biases_into_ring_products() {
    let ring = rewrite(&block(1), 50, Emulation::Ring);
    let ops = ops(&ring);
    assert_eq!(
        ops.iter().filter(|o| *o == "SufRingMatMul").count(),
        2,
        "{ops:?}"
    );
    assert!(!ops.contains(&"MatMul".to_string()), "{ops:?}");
    // The two bias Adds are gone (fused); the residual Add is a ring addition; softmax and
    // LayerNorm are one f64 function node each; the output leaves the ring through a decode.
    let count = |op: &str| ops.iter().filter(|o| *o == op).count();
    assert_eq!(count("Add"), 0, "{ops:?}");
    assert_eq!(count("SufRingAdd"), 1, "{ops:?}");
    assert_eq!(count("SufRingFunction"), 2, "{ops:?}");
    assert_eq!(count("SufRingDecode"), 1, "{ops:?}");
    assert_eq!(count("SufQuantize"), 0, "{ops:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn ring_equals_output_bit_for_bit_with_ample_headroom(seed in any::<u64>()) {
        let model = linear_block(seed);
        let mut r = Rng(seed ^ 0x5eed);
        let x = Tensor::from_shape(&[2, 4, 8], &r.vec(64, 6, 2.0)).unwrap();
        let out = run(&rewrite(&model, 50, Emulation::Output), &x);
        let ring = run(&rewrite(&model, 50, Emulation::Ring), &x);
        for (i, (a, b)) in out.iter().zip(&ring).enumerate() {
            prop_assert_eq!(a.to_bits(), b.to_bits(), "element {}: output {} ring {}", i, a, b);
        }
    }
}

/// x[1, 1] * w[1, 1]: at n = 20, f = 12 the 2f product 0.5 * 1.0 = 2^23 does not fit the ring.
fn single_product() -> ModelProto {
    let mut g = GraphBuilder::new("overflow");
    g.opset(17)
        .input_f32("x", &[1, 1])
        .output("y")
        .init_f32("w", &[1, 1], &[1.0]);
    g.node("MatMul", &["x", "w"], &["y"]).name = "overflow_product".into();
    g.build()
}

#[test]
fn ring_overflow_at_n20_wraps_and_is_recorded() {
    let _guard = STATS.lock().unwrap_or_else(|e| e.into_inner());
    let x = Tensor::from_shape(&[1, 1], &[0.5f32]).unwrap();
    let model = single_product();
    // Level output only encodes the result: 0.5 fits in 20 bits at scale f.
    assert_eq!(run(&rewrite(&model, 20, Emulation::Output), &x), [0.5]);
    let ring = rewrite(&model, 20, Emulation::Ring);
    stats::set_enabled(true);
    let y = run(&ring, &x);
    stats::set_enabled(false);
    let recorded = stats::take();
    // 2^23 mod 2^20 = 0: the product wrapped to zero.
    assert_eq!(y, [0.0]);
    let s = recorded
        .get("overflow_product/suf_ring")
        .expect("the ring product recorded its statistics");
    assert_eq!(s.overflows_2f, 1);
    assert_eq!(s.max_abs_2f, Some(0.5));
    // With room for the product (n = 37: 2f products up to 4096) nothing wraps.
    stats::set_enabled(true);
    assert_eq!(run(&rewrite(&model, 37, Emulation::Ring), &x), [0.5]);
    stats::set_enabled(false);
    assert_eq!(stats::take()["overflow_product/suf_ring"].overflows_2f, 0);
}

#[test]
fn a_fused_product_and_bias_records_the_products_own_range() {
    // n = 14, f = 12: the ring holds |x| < 2. The product 2.5 wraps (to -1.5); the bias 1.0
    // then lands the sum inside the ring (-0.5), hiding the wrap unless the product's own
    // range is recorded.
    let mut g = GraphBuilder::new("bias_hides_wrap");
    g.opset(17)
        .input_f32("x", &[1, 1])
        .output("y")
        .init_f32("w", &[1, 1], &[1.0])
        .init_f32("b", &[1], &[1.0]);
    // Names no other test uses: the statistics are process-wide and tests run in parallel.
    g.node("MatMul", &["x", "w"], &["h"]).name = "hidden_wrap_product".into();
    g.node("Add", &["h", "b"], &["y"]).name = "hidden_wrap_bias".into();
    let model = rewrite(&g.build(), 14, Emulation::Output);
    assert!(
        ops(&model).contains(&"SufQuantizeBias".to_string()),
        "{:?}",
        ops(&model)
    );
    let x = Tensor::from_shape(&[1, 1], &[2.5f32]).unwrap();
    let guard = STATS.lock().unwrap_or_else(|e| e.into_inner());
    stats::set_enabled(true);
    let y = run(&model, &x);
    stats::set_enabled(false);
    assert_eq!(y, [-0.5]);
    let recorded = stats::take();
    drop(guard);
    let s = recorded
        .iter()
        .find(|(k, _)| k.starts_with("hidden_wrap"))
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("no statistics of the fused node: {recorded:?}"));
    assert_eq!(s.max_abs, 2.5, "{recorded:?}");
    assert!(s.overflows >= 1, "{recorded:?}");
}
