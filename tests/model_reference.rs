//! Model-level integer reference (issue 11, acceptance item 1): an independent integer
//! implementation of the BERT and GPT-2 fixtures at levels `ring` and `sigma`, written from
//! docs/ring-transport.md and REFERENCES.md section 2, compared bit for bit with every SUF
//! tensor of suf's pipeline (suf_compiler::compile, then tract) and with the logits.
//!
//! The reference uses no tract computation, no suf-compiler code and no suf-fixed
//! arithmetic: tests/model_reference/ring.rs (Wrap, Ars, Enc), functions.rs (the level-ring
//! f64 formulas and SIGMA's algorithms and tables), layers.rs, bert.rs, gpt2.rs. Weights are
//! read from the ONNX protobuf by node name (onnx.rs).
//!
//! How the doc was read where it leaves room (each choice is what the reference computes):
//! 1. Float islands (BERT's pooler Tanh) run in the engine's f32. The doc does not fix
//!    tract's f32 tanh (a rational fit whose FMA / AVX-512 kernels round differently per
//!    CPU), so the reference takes the island's f32 output from the pipeline run and checks
//!    it is within 16 ulps of libm's tanh of the reference's OWN decoded input; the island's
//!    input, the decode's exactness and everything in the ring are the reference's.
//! 2. The exporters' mask bias is 0 on live entries (Where(mask, 0, float32 min)), so a live
//!    score passes unchanged (Wrap(q + Enc(0)) = q). Masked: padding keys (BERT); keys after
//!    the query or padding keys (GPT-2). Masked entries output 0.
//! 3. The attention scale folds into the shift at both levels ("Products"): f + 2 for
//!    BERT (1/4), f + 1 for GPT-2 (1/2); the scores tensor is named after the Mul's output.
//! 4. GELU at level ring uses the doc's formulas verbatim (erf form with
//!    `x * FRAC_1_SQRT_2`, not the graph's Div by the f32 1.4142135). At level sigma both
//!    models use SIGMA's GELU (its table is the erf form), GPT-2's tanh form included.
//! 5. LayerNorm at level ring: g, b = Enc(gamma), Enc(beta) at scale f (round half to
//!    even), eps the graph's f32 constant read as f64. At level sigma gamma is Enc_f and
//!    beta Enc_2f, both truncating (REFERENCES.md: "beta at 2f").
//! 6. SIGMA's sum of squares S is read as n unsigned bits, so it wraps once
//!    C * var * 2^(2f) >= 2^n, i.e. var >= 2^(n-2f) / C: 256 for n = 37 with C = 32 (BERT).
//! 7. Sums "left to right" start at 0.0 and visit live entries in key order.
//! 8. Names and shapes: a fused Gemm's SUF tensor is the Gemm output (GPT-2's Conv1D:
//!    [B*T, N]); embedding Gathers keep their ONNX shapes (positions [1, T, C]);
//!    `logits.ring` has the shape of `logits`.
//! 9. SufRingDecode outputs (f32 into float islands, f64 for graph outputs) are unnamed by
//!    the doc: not compared. The decoded graph output `logits` must be f64 and equal
//!    `logits.ring` * 2^-f exactly. Any other SUF
//!    node output that the reference does not compute is a failure.
//!
//! Regimes (applied to the fixture before compiling; the reference reads the same weights):
//! every case breaks the exporter's tied all-zero biases and all-one LayerNorm weights
//! (Identity aliases become their own initializers) and gives them seeded random values,
//! and multiplies the MatMul/Gemm weights by 8 (scores and GELU inputs of order 1);
//! `big13` / `big20` add 9000 / 1.25 * 2^20 to every position embedding (an offset: the
//! residual stream grows past 2^13 / 2^20 while LayerNorm, shift-invariant, stays in range;
//! in GPT-2 the whole residual stream carries it, in BERT the embedding sums do);
//! `lnwrap` multiplies the word embeddings by 2048 so SIGMA's sum of squares wraps at n = 37.
//! Not run: BERT `big20` at sigma n = 37 (32 values of 2^20 sum past the 37-bit ring in
//! SIGMA's mean, everything after is garbage and the pooler's f32 decode must fail).

#[path = "model_reference/bert.rs"]
mod bert;
#[path = "model_reference/compare.rs"]
mod compare;
#[path = "model_reference/functions.rs"]
mod functions;
#[path = "model_reference/gpt2.rs"]
mod gpt2;
#[path = "model_reference/layers.rs"]
mod layers;
#[path = "model_reference/onnx.rs"]
mod onnx;
#[path = "model_reference/pipeline.rs"]
mod pipeline;
#[path = "model_reference/ring.rs"]
mod ring;

use layers::{Inputs, Trace};
use pipeline::Values;
use ring::{Level, Ring};
use std::path::PathBuf;
use std::time::Instant;
use suf_compiler::ModelProto;
use tract_onnx::prelude::*;

const F: u32 = 12;
const TANH_ULPS: u32 = 16;
const TANH: &str = "/bert/pooler/activation/Tanh_output_0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Model {
    Bert,
    Gpt2,
}

impl Model {
    fn fixture(self) -> &'static str {
        match self {
            Model::Bert => "bert_tiny_op14",
            Model::Gpt2 => "gpt2_tiny_op14",
        }
    }

    fn position_table(self) -> &'static str {
        match self {
            Model::Bert => "bert.embeddings.position_embeddings.weight",
            Model::Gpt2 => "model.transformer.wpe.weight",
        }
    }

    fn word_table(self) -> &'static str {
        match self {
            Model::Bert => "bert.embeddings.word_embeddings.weight",
            Model::Gpt2 => "model.transformer.wte.weight",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Regime {
    Ordinary,
    Big13,
    Big20,
    LnWrap,
}

impl Regime {
    fn name(self) -> &'static str {
        match self {
            Regime::Ordinary => "ordinary",
            Regime::Big13 => "big13",
            Regime::Big20 => "big20",
            Regime::LnWrap => "lnwrap",
        }
    }
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A deterministic uniform draw in [-1, 1) per (tensor name, element).
fn noise(name: &str, i: usize) -> f32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain((i as u64).to_le_bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    ((h >> 40) as f64 / (1u64 << 23) as f64 - 1.0) as f32
}

/// The fixture with the regime's weights (see the header).
fn prepare(model: Model, regime: Regime) -> ModelProto {
    let mut m = onnx::load(&fixture(&format!("{}.onnx", model.fixture())));
    onnx::untie_identities(&mut m);
    for name in onnx::rank1_initializers(&m) {
        // Rank-1 `.weight` tensors are LayerNorm scales; the rest are biases and shifts.
        let gamma = name.ends_with(".weight");
        onnx::map_initializer(&mut m, &name, |i, _| {
            if gamma {
                1.0 + 0.5 * noise(&name, i)
            } else {
                0.25 * noise(&name, i)
            }
        });
    }
    for name in onnx::matmul_weight_initializers(&m) {
        onnx::map_initializer(&mut m, &name, |_, w| 8.0 * w);
    }
    match regime {
        Regime::Ordinary => {}
        Regime::Big13 => onnx::map_initializer(&mut m, model.position_table(), |_, w| w + 9000.0),
        Regime::Big20 => {
            onnx::map_initializer(&mut m, model.position_table(), |_, w| w + 1_310_720.0)
        }
        Regime::LnWrap => onnx::map_initializer(&mut m, model.word_table(), |_, w| 2048.0 * w),
    }
    m
}

/// The fixture's two examples (the second padded after 50 tokens), for tract and for the
/// reference.
fn inputs(model: Model) -> (Vec<(String, Tensor)>, Inputs) {
    let path = fixture(&format!("{}.ref.json", model.fixture()));
    let text = std::fs::read_to_string(&path).expect("the fixture's .ref.json");
    let r: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let field = |k: &str| -> Option<Vec<Vec<i64>>> {
        r["inputs"]
            .get(k)
            .map(|v| serde_json::from_value(v.clone()).expect("rows of integers"))
    };
    let ids = field("input_ids").expect("input_ids");
    let (batch, seq) = (ids.len(), ids[0].len());
    let mut tract_inputs = vec![];
    for k in ["input_ids", "attention_mask", "token_type_ids"] {
        if let Some(rows) = field(k) {
            let t = Tensor::from_shape(&[batch, seq], &rows.concat()).expect("[batch, seq]");
            tract_inputs.push((k.to_string(), t));
        }
    }
    let reference = Inputs {
        batch,
        seq,
        input_ids: ids.concat(),
        attention_mask: field("attention_mask").expect("attention_mask").concat(),
        token_type_ids: field("token_type_ids")
            .map(|v| v.concat())
            .unwrap_or_default(),
    };
    (tract_inputs, reference)
}

/// ulps between two finite f32 of the same sign region (ordered as integers).
fn ulps(a: f32, b: f32) -> u32 {
    let key = |x: f32| {
        let i = x.to_bits() as i32;
        if i < 0 {
            i32::MIN - i
        } else {
            i
        }
    };
    (key(a) as i64 - key(b) as i64)
        .unsigned_abs()
        .min(u32::MAX as u64) as u32
}

/// The float island's output from the pipeline, checked against libm's tanh of the
/// reference's own input (header, choice 1).
fn tanh_island<'a>(
    p: &'a pipeline::Pipeline,
    problems: &'a mut Vec<String>,
) -> impl FnMut(&str, &[f32]) -> Vec<f32> + 'a {
    move |name, x| {
        assert_eq!(name, TANH, "the only float island of these models");
        let exact: Vec<f32> = x.iter().map(|&v| libm::tanh(v as f64) as f32).collect();
        let got = match p.tensors.get(name).map(|r| &r.values) {
            Some(Values::F32(v)) if v.len() == x.len() => v.clone(),
            _ => {
                if p.error.is_none() {
                    problems.push(format!("float island `{name}` not read back as f32"));
                }
                return exact;
            }
        };
        let far = (0..x.len())
            .filter(|&i| ulps(got[i], exact[i]) > TANH_ULPS)
            .collect::<Vec<_>>();
        if let Some(&i) = far.first() {
            problems.push(format!(
                "float island `{name}`: {} of {} outputs are more than {TANH_ULPS} ulps from tanh of the reference's input (element {i}: tanh({}) = {}, pipeline {})",
                far.len(),
                x.len(),
                x[i],
                exact[i],
                got[i]
            ));
        }
        got
    }
}

/// What the regime promises about the reference's own computation; a broken promise
/// means the case does not test what it says.
fn design_problems(case: &Case, ring: &Ring, t: &Trace) -> Vec<String> {
    let mut out: Vec<String> = t
        .unusable
        .iter()
        .map(|u| format!("case design: {u}"))
        .collect();
    let mut need = |ok: bool, what: String| {
        if !ok {
            out.push(format!("case design: {what}"));
        }
    };
    let max = t.residual_max_abs;
    match case.regime {
        Regime::Ordinary => {
            need(
                max < 2048.0,
                format!("ordinary residual stream reaches {max}"),
            );
            need(
                t.products.wrapped == 0,
                format!(
                    "{} products wrapped in the ordinary regime",
                    t.products.wrapped
                ),
            );
        }
        Regime::Big13 => need(max > 8192.0, format!("residual stream max {max} <= 2^13")),
        Regime::Big20 => need(
            max > 1048576.0,
            format!("residual stream max {max} <= 2^20"),
        ),
        Regime::LnWrap => {}
    }
    if ring.level == Level::Sigma {
        let wraps = t.ln_sum_sq_wraps;
        let expect = case.regime == Regime::LnWrap && ring.n == 37;
        need(
            (wraps > 0) == expect,
            format!(
                "SIGMA LayerNorm sum of squares wrapped in {wraps} of {} rows, expected {}",
                t.ln_rows,
                if expect { "some" } else { "none" }
            ),
        );
        need(
            t.ln_sum_wraps == 0,
            format!("{} LayerNorm row sums wrapped", t.ln_sum_wraps),
        );
    }
    out
}

struct Case {
    model: Model,
    level: Level,
    n: u32,
    regime: Regime,
}

impl Case {
    fn label(&self) -> String {
        format!(
            "{:?} {} n={} {}",
            self.model,
            self.level.name(),
            self.n,
            self.regime.name()
        )
    }
}

/// Runs the pipeline and the reference for one case: `None` when they agree bit for bit.
fn run_case(case: &Case) -> Option<String> {
    let start = Instant::now();
    let model = prepare(case.model, case.regime);
    let (tract_inputs, ref_inputs) = inputs(case.model);
    let ring = Ring::new(case.n, F, case.level);
    // Names the reference will emit are not known before it runs; these are read back
    // besides the SUF outputs: the decoded logits and the float island.
    let wanted = vec!["logits".to_string(), TANH.to_string()];
    let p = pipeline::run(&model, case.n, case.level, &tract_inputs, &wanted);
    let mut problems = vec![];
    let trace = {
        let mut island = tanh_island(&p, &mut problems);
        match case.model {
            Model::Bert => bert::forward(&model, ring, &ref_inputs, &mut island),
            Model::Gpt2 => gpt2::forward(&model, ring, &ref_inputs, &mut island),
        }
    };
    problems.extend(design_problems(case, &ring, &trace));
    println!(
        "{}: residual max |x| {:.1}, {} of {} products wrapped, SIGMA LN sum-of-squares wraps {} of {} rows, {:.1} s",
        case.label(),
        trace.residual_max_abs,
        trace.products.wrapped,
        trace.products.sums,
        trace.ln_sum_sq_wraps,
        trace.ln_rows,
        start.elapsed().as_secs_f64()
    );
    compare::compare(&ring, &trace, &p, &problems).map(|r| format!("[{}] {r}", case.label()))
}

fn run_cases(model: Model, level: Level, cases: &[(u32, Regime)]) {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|&(n, regime)| {
            run_case(&Case {
                model,
                level,
                n,
                regime,
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from the integer reference:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

const BOTH: [u32; 2] = [37, 50];

fn grid(regimes: &[Regime]) -> Vec<(u32, Regime)> {
    regimes
        .iter()
        .flat_map(|&r| BOTH.iter().map(move |&n| (n, r)))
        .collect()
}

#[test]
fn bert_ring_matches_the_integer_reference() {
    let mut cases = grid(&[Regime::Ordinary, Regime::Big13, Regime::Big20]);
    cases.push((37, Regime::LnWrap));
    run_cases(Model::Bert, Level::Ring, &cases);
}

#[test]
fn bert_sigma_matches_the_integer_reference() {
    let mut cases = grid(&[Regime::Ordinary, Regime::Big13, Regime::LnWrap]);
    cases.push((50, Regime::Big20));
    run_cases(Model::Bert, Level::Sigma, &cases);
}

#[test]
fn gpt2_ring_matches_the_integer_reference() {
    run_cases(
        Model::Gpt2,
        Level::Ring,
        &grid(&[Regime::Ordinary, Regime::Big13, Regime::Big20]),
    );
}

#[test]
fn gpt2_sigma_matches_the_integer_reference() {
    let mut cases = grid(&[Regime::Ordinary, Regime::Big13, Regime::Big20]);
    cases.push((37, Regime::LnWrap));
    run_cases(Model::Gpt2, Level::Sigma, &cases);
}
