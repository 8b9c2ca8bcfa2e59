//! One ONNX graph made runnable in tract with fixed input facts [batch, seq_len] (SPEC section 7:
//! symbolic dims fail to type for decoders), fed by input name.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use suf_compiler::panic_guard;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use crate::device::Device;
use crate::logit_slots;

/// A model input the runner knows how to fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputRole {
    InputIds,
    AttentionMask,
    TokenTypeIds,
    PositionIds,
    /// `suf_compiler::logit_positions::INPUT`: where a decoder computes its logits
    /// (`batch * W` flat row indices `b * seq_len + position`), added by that rewrite.
    LogitPositions,
}

impl InputRole {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "input_ids" => Some(InputRole::InputIds),
            "attention_mask" => Some(InputRole::AttentionMask),
            "token_type_ids" => Some(InputRole::TokenTypeIds),
            "position_ids" => Some(InputRole::PositionIds),
            suf_compiler::logit_positions::INPUT => Some(InputRole::LogitPositions),
            _ => None,
        }
    }
}

/// One batch of token rows, each exactly `seq_len` long (already padded).
pub struct TokenBatch {
    pub batch: usize,
    pub seq_len: usize,
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub token_type_ids: Vec<i64>,
    /// Decoder batches: each row's prompt length (its real tokens, before the right
    /// padding), which places the row's logit slots (`logit_slots`). Empty otherwise.
    pub prompt_lens: Vec<usize>,
}

/// A graph as tract parsed it, before typing: `Engine::from_parsed` plans it for one input
/// shape. Cloning it for another shape shares the weight tensors (tract keeps them in Arcs).
pub struct Parsed {
    model: InferenceModel,
    logit_width: Option<usize>,
    /// tract reading the ModelProto (the ONNX parse).
    pub parse: Duration,
}

impl Parsed {
    pub fn new(
        framework: &tract_onnx::Onnx,
        proto: &ModelProto,
        model_dir: Option<&std::path::Path>,
    ) -> Result<Self> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Self::build(framework, proto, model_dir)
        }))
        .map_err(|p| {
            anyhow!(
                "tract panicked while parsing the graph: {}",
                panic_guard::payload_text(p.as_ref())
            )
        })?
    }

    fn build(
        framework: &tract_onnx::Onnx,
        proto: &ModelProto,
        model_dir: Option<&std::path::Path>,
    ) -> Result<Self> {
        let dir = model_dir.and_then(|d| d.to_str());
        let logit_width = suf_compiler::logit_positions::width_of(proto)?;
        // The input facts set below fix every input's rank (token inputs [batch, seq],
        // the logit positions [batch * W]); axes are checked against those ranks before
        // tract's rules, which wrap an axis below -rank and can then loop for ever.
        if let Some(g) = proto.graph.as_ref() {
            let ranks: Vec<(&str, usize)> = g
                .input
                .iter()
                .filter(|v| !g.initializer.iter().any(|t| t.name == v.name))
                .map(|v| {
                    let r = if v.name == suf_compiler::logit_positions::INPUT {
                        1
                    } else {
                        2
                    };
                    (v.name.as_str(), r)
                })
                .collect();
            suf_compiler::ranks::check_axes(g, &ranks)?;
        }
        let t0 = Instant::now();
        let parsed = framework
            .parse(proto, dir)
            .map_err(|e| anyhow!("tract cannot parse the graph: {e:#}"))?;
        Ok(Parsed {
            model: parsed.model,
            logit_width,
            parse: t0.elapsed(),
        })
    }
}

/// Seconds spent building one plan, by phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildTimes {
    /// tract reading the ModelProto into its own graph (the ONNX parse).
    pub parse: Duration,
    /// Typing with the fixed input facts, optimisation, and the runnable plan.
    pub optimise: Duration,
}

pub struct Engine {
    plan: Arc<TypedRunnableModel>,
    inputs: Vec<(InputRole, DatumType)>,
    pub batch: usize,
    pub seq_len: usize,
    /// Shape of the logits output with the batch dim included.
    pub output_shape: Vec<usize>,
    /// Intermediate tensors returned after the logits (diagnostics), by ONNX tensor name.
    pub probes: Vec<String>,
    /// Choices made about the graph that a report must show (e.g. which output was scored).
    pub notes: Vec<String>,
    /// Decoders rewritten by `suf_compiler::logit_positions`: the W logit slots per example
    /// (`output_shape` is then [batch, W, vocab]); None when logits cover every position.
    pub logit_width: Option<usize>,
    pub times: BuildTimes,
    pub device: Device,
    /// cuda plans: where each node runs (every node on the CPU and every copy, reported).
    pub placement: Option<suf_gpu::Placement>,
}

/// Seconds tract's typing and optimisation of one graph may take (`SUF_TRACT_TIMEOUT_S`).
const DEFAULT_TRACT_TIMEOUT_S: u64 = 600;

/// tract's typing and optimisation, with a deadline: on some inconsistent graphs (a fuzzed
/// table of the wrong rank, seen: seed 401, input 409003) tract's shape inference builds ever
/// larger symbolic dimensions and never returns. That is an error about the graph, not a
/// hang; the runaway thread is left behind and ends with the process.
/// `optimise`: false for tract-cuda, which translates the decluttered graph (tract's CPU
/// optimisation replaces ops by CPU kernels it cannot place) and optimises after.
fn type_and_optimise(
    model: InferenceModel,
    batch: usize,
    seq_len: usize,
    optimise: bool,
) -> Result<TypedModel> {
    let limit = std::env::var("SUF_TRACT_TIMEOUT_S")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(DEFAULT_TRACT_TIMEOUT_S);
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("tract-typing".into())
        .spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let typed = model.into_typed().map_err(|e| {
                    anyhow!("tract cannot type the graph with inputs [{batch}, {seq_len}]: {e:#}")
                })?;
                if optimise {
                    typed.into_optimized()
                } else {
                    typed.into_decluttered()
                }
                .map_err(|e| anyhow!("tract cannot optimise the graph: {e:#}"))
            }))
            .unwrap_or_else(|p| {
                Err(anyhow!(
                    "tract panicked while typing the graph: {}",
                    panic_guard::payload_text(p.as_ref())
                ))
            });
            let _ = send.send(result);
        })
        .context("cannot start tract's typing thread")?;
    match receive.recv_timeout(Duration::from_secs(limit)) {
        Ok(result) => result,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => bail!(
            "tract's typing of the graph with inputs [{batch}, {seq_len}] did not finish in {limit} s: \
             its shapes are likely inconsistent (set SUF_TRACT_TIMEOUT_S to allow longer)"
        ),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            bail!("tract's typing thread ended without a result")
        }
    }
}

/// The output to score: the one named `logits`; a model's only output otherwise (with a
/// note saying so); with several outputs and none named `logits`, an error.
fn pick_logits(names: &[String]) -> Result<(usize, Vec<String>)> {
    if let Some(i) = names.iter().position(|n| n == "logits") {
        return Ok((i, vec![]));
    }
    match names {
        [] => bail!("model has no outputs"),
        [only] => Ok((
            0,
            vec![format!(
                "scored output \"{only}\", the model's only output (none is named \"logits\")"
            )],
        )),
        _ => bail!(
            "model has outputs {names:?} and none is named \"logits\": cannot tell which to score"
        ),
    }
}

impl Engine {
    /// Parses `proto` with `framework` (which must know the SUF custom ops for rewritten
    /// graphs), fixes the input facts, keeps only the logits output, and optimises.
    pub fn new(
        framework: &tract_onnx::Onnx,
        proto: &ModelProto,
        model_dir: Option<&std::path::Path>,
        batch: usize,
        seq_len: usize,
    ) -> Result<Self> {
        Self::with_probes(framework, proto, model_dir, batch, seq_len, &[])
    }

    /// `new` on a chosen device.
    pub fn new_on(
        device: Device,
        framework: &tract_onnx::Onnx,
        proto: &ModelProto,
        model_dir: Option<&std::path::Path>,
        batch: usize,
        seq_len: usize,
    ) -> Result<Self> {
        Self::with_probes_on(device, framework, proto, model_dir, batch, seq_len, &[])
    }

    /// Like `new`, and also returns the named intermediate tensors after the logits
    /// (`run_all`), for per-node diagnostics.
    pub fn with_probes(
        framework: &tract_onnx::Onnx,
        proto: &ModelProto,
        model_dir: Option<&std::path::Path>,
        batch: usize,
        seq_len: usize,
        probes: &[String],
    ) -> Result<Self> {
        Self::with_probes_on(
            Device::Cpu,
            framework,
            proto,
            model_dir,
            batch,
            seq_len,
            probes,
        )
    }

    /// `with_probes` on a chosen device.
    pub fn with_probes_on(
        device: Device,
        framework: &tract_onnx::Onnx,
        proto: &ModelProto,
        model_dir: Option<&std::path::Path>,
        batch: usize,
        seq_len: usize,
        probes: &[String],
    ) -> Result<Self> {
        // tract asserts rather than errs on some graphs it cannot optimise (SPEC section 7:
        // an EinSum rank assertion): that is an error about this graph, not a crash.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Self::build(device, framework, proto, model_dir, batch, seq_len, probes)
        }))
        .map_err(|p| {
            anyhow!(
                "tract panicked while loading the graph: {}",
                panic_guard::payload_text(p.as_ref())
            )
        })?
    }

    fn build(
        device: Device,
        framework: &tract_onnx::Onnx,
        proto: &ModelProto,
        model_dir: Option<&std::path::Path>,
        batch: usize,
        seq_len: usize,
        probes: &[String],
    ) -> Result<Self> {
        let parsed = Parsed::build(framework, proto, model_dir)?;
        let mut engine = Self::build_parsed(device, &parsed, batch, seq_len, probes)?;
        engine.times.parse = parsed.parse;
        Ok(engine)
    }

    /// Types, optimises and plans an already parsed graph for `[batch, seq_len]` (length
    /// buckets: one parse, one plan per bucket). Its `times.parse` is zero (`parsed.parse`
    /// holds the parse, done once).
    pub fn from_parsed(
        device: Device,
        parsed: &Parsed,
        batch: usize,
        seq_len: usize,
    ) -> Result<Self> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Self::build_parsed(device, parsed, batch, seq_len, &[])
        }))
        .map_err(|p| {
            anyhow!(
                "tract panicked while loading the graph: {}",
                panic_guard::payload_text(p.as_ref())
            )
        })?
    }

    /// Whether the graph has an input of this role (e.g. an encoder's attention mask).
    pub fn fills(&self, role: InputRole) -> bool {
        self.inputs.iter().any(|(r, _)| *r == role)
    }

    fn build_parsed(
        device: Device,
        parsed: &Parsed,
        batch: usize,
        seq_len: usize,
        probes: &[String],
    ) -> Result<Self> {
        let logit_width = parsed.logit_width;
        let t0 = Instant::now();
        let mut model = parsed.model.clone();
        let mut inputs = Vec::new();
        let input_outlets = model.input_outlets()?.to_vec();
        for (ix, outlet) in input_outlets.iter().enumerate() {
            let name = model.node(outlet.node).name.clone();
            let role = InputRole::from_name(&name).ok_or_else(|| {
                anyhow!("model input \"{name}\" is not one the runner can fill (input_ids, attention_mask, token_type_ids, position_ids)")
            })?;
            if role == InputRole::LogitPositions {
                // Only the rewrite adds this input, and it records W beside it.
                let w = logit_width.ok_or_else(|| {
                    anyhow!(
                        "model input \"{name}\" without the {} metadata that says how many positions per example it holds",
                        suf_compiler::logit_positions::WIDTH_KEY
                    )
                })?;
                model.set_input_fact(ix, InferenceFact::dt_shape(DatumType::I64, [batch * w]))?;
                inputs.push((role, DatumType::I64));
                continue;
            }
            // An input without an element type is a broken export, not an int64 one.
            let dt = model
                .input_fact(ix)?
                .datum_type
                .concretize()
                .ok_or_else(|| anyhow!("model input \"{name}\" declares no element type; expected int64 or int32 token ids"))?;
            if !matches!(dt, DatumType::I64 | DatumType::I32) {
                bail!("model input \"{name}\" has type {dt:?}; expected int64 or int32 token ids");
            }
            model.set_input_fact(ix, InferenceFact::dt_shape(dt, [batch, seq_len]))?;
            inputs.push((role, dt));
        }
        if !inputs.iter().any(|(r, _)| *r == InputRole::InputIds) {
            bail!("model has no \"input_ids\" input");
        }
        if logit_width.is_some() && !inputs.iter().any(|(r, _)| *r == InputRole::LogitPositions) {
            bail!(
                "model metadata sets {} but the graph has no \"{}\" input",
                suf_compiler::logit_positions::WIDTH_KEY,
                suf_compiler::logit_positions::INPUT
            );
        }
        let outputs = model.output_outlets()?.to_vec();
        let names: Vec<String> = outputs
            .iter()
            .map(|o| {
                model
                    .outlet_label(*o)
                    .map(str::to_string)
                    .unwrap_or_else(|| model.node(o.node).name.clone())
            })
            .collect();
        let (logits, notes) = pick_logits(&names)?;
        let logits = outputs[logits];
        let mut selected = vec![logits];
        for name in probes {
            selected.push(
                model
                    .find_outlet_label(name)
                    .or_else(|| {
                        model
                            .node_by_name(name)
                            .ok()
                            .map(|n| OutletId::new(n.id, 0))
                    })
                    .with_context(|| format!("no tensor named \"{name}\" in the graph"))?,
            );
        }
        model.select_output_outlets(&selected)?;
        let optimized = type_and_optimise(model, batch, seq_len, device == Device::Cpu)?;
        let fact = optimized.output_fact(0)?;
        let output_shape = fact
            .shape
            .as_concrete()
            .map(|s| s.to_vec())
            .ok_or_else(|| anyhow!("logits shape {:?} is not concrete", fact.shape))?;
        // f64: the SUF graphs of levels ring and sigma decode their logits exactly to f64.
        if !matches!(fact.datum_type, DatumType::F32 | DatumType::F64) {
            bail!(
                "logits are {:?}; the runner expects float32 (or float64)",
                fact.datum_type
            );
        }
        if let Some(w) = logit_width {
            ensure!(
                output_shape.len() == 3 && output_shape[..2] == [batch, w],
                "logits at {w} positions per example have shape {output_shape:?}, expected [{batch}, {w}, vocab]"
            );
        }
        let (plan, placement) = match device {
            Device::Cpu => (optimized.into_runnable()?, None),
            Device::Cuda => {
                let (plan, placement) = suf_gpu::prepare(optimized)?;
                (plan, Some(placement))
            }
        };
        Ok(Engine {
            plan,
            inputs,
            batch,
            seq_len,
            output_shape,
            probes: probes.to_vec(),
            notes,
            logit_width,
            times: BuildTimes {
                parse: Duration::ZERO,
                optimise: t0.elapsed(),
            },
            device,
            placement,
        })
    }

    /// The graph inputs for one batch, in the plan's input order.
    fn feeds(&self, tb: &TokenBatch) -> Result<TVec<TValue>> {
        let shape = [self.batch, self.seq_len];
        let mut values: TVec<TValue> = tvec![];
        for (role, dt) in &self.inputs {
            if *role == InputRole::LogitPositions {
                let w = self.logit_width.expect("checked when the plan was built");
                ensure!(
                    tb.prompt_lens.len() == self.batch,
                    "the graph computes logits at selected positions, but the batch gives {} prompt lengths for {} rows (not a decoder batch?)",
                    tb.prompt_lens.len(),
                    self.batch
                );
                let flat = logit_slots::flat_positions(&tb.prompt_lens, self.seq_len, w)?;
                values.push(Tensor::from_shape(&[flat.len()], &flat)?.into_tvalue());
                continue;
            }
            let data: Vec<i64> = match role {
                InputRole::InputIds => tb.input_ids.clone(),
                InputRole::AttentionMask => tb.attention_mask.clone(),
                InputRole::TokenTypeIds => tb.token_type_ids.clone(),
                InputRole::PositionIds => (0..self.batch)
                    .flat_map(|_| 0..self.seq_len as i64)
                    .collect(),
                InputRole::LogitPositions => unreachable!("filled above"),
            };
            let tensor = match dt {
                DatumType::I32 => {
                    let v: Vec<i32> = data.iter().map(|&x| x as i32).collect();
                    Tensor::from_shape(&shape, &v)?
                }
                _ => Tensor::from_shape(&shape, &data)?,
            };
            values.push(tensor.into_tvalue());
        }
        Ok(values)
    }

    /// Runs one batch and returns the time spent per op name (tract's op, e.g.
    /// `SufRingMatMul`, `EinSum`), summed over the graph's nodes, largest first.
    pub fn profile(&self, tb: &TokenBatch) -> Result<Vec<(String, std::time::Duration)>> {
        let values = self.feeds(tb)?;
        let mut per_op = std::collections::BTreeMap::<String, std::time::Duration>::new();
        let mut state = self.plan.spawn()?;
        state
            .run_plan_with_eval(values, |ctx, op_state, node, input| {
                let t0 = std::time::Instant::now();
                let r = tract_onnx::tract_core::plan::eval(ctx, op_state, node, input);
                *per_op.entry(node.op().name().to_string()).or_default() += t0.elapsed();
                r
            })
            .map_err(|e| anyhow!("tract run failed: {e:#}"))?;
        let mut v: Vec<_> = per_op.into_iter().collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        Ok(v)
    }

    /// Runs one batch; the logits have `output_shape`.
    pub fn run(&self, tb: &TokenBatch) -> Result<Logits> {
        let mut all = self.run_all(tb)?;
        Ok(Logits(all.remove(0)))
    }

    /// Runs one batch: the logits, then one tensor per probe.
    pub fn run_all(&self, tb: &TokenBatch) -> Result<Vec<TValue>> {
        if tb.batch != self.batch || tb.seq_len != self.seq_len {
            bail!(
                "batch [{}, {}] does not match the plan's [{}, {}]",
                tb.batch,
                tb.seq_len,
                self.batch,
                self.seq_len
            );
        }
        let values = self.feeds(tb)?;
        // A tract kernel that panics (e.g. an out-of-range Gather) must become an error
        // naming the graph and node, not an abort of the whole run.
        let outputs = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut state = self.plan.spawn()?;
            state.run_plan_with_eval(values, |ctx, op_state, node, input| {
                let _scope = panic_guard::NodeScope::enter(&node.name);
                tract_onnx::tract_core::plan::eval(ctx, op_state, node, input)
            })
        }))
        .map_err(|p| {
            let node = panic_guard::take_last()
                .and_then(|r| r.node)
                .unwrap_or_else(|| "(unknown)".into());
            anyhow!(
                "tract panicked at node {node} while running the graph: {}",
                panic_guard::payload_text(p.as_ref())
            )
        })?
        .map_err(|e| anyhow!("tract run failed: {e:#}"))?;
        let mut outputs: Vec<TValue> = outputs.into_iter().collect();
        ensure!(!outputs.is_empty(), "model produced no output");
        let out = &outputs[0];
        if out.shape() != self.output_shape.as_slice() {
            bail!(
                "logits shape {:?}, expected {:?}",
                out.shape(),
                self.output_shape
            );
        }
        // Validate once so reading it later cannot fail.
        let plain = out.try_as_plain_ram()?;
        if out.datum_type() == DatumType::F64 {
            plain.as_slice::<f64>()?;
        } else {
            plain.as_slice::<f32>()?;
        }
        for (p, t) in self.probes.iter().zip(outputs.iter_mut().skip(1)) {
            // i64 probes are ring tensors (levels ring, sigma), f64 ones their exact decode:
            // the caller reads them as they are; a cast to f32 would round them.
            if !matches!(
                t.datum_type(),
                DatumType::F32 | DatumType::F64 | DatumType::I64
            ) {
                *t = t
                    .cast_to::<f32>()
                    .with_context(|| format!("probe {p}"))?
                    .into_owned()
                    .into_tvalue();
            }
        }
        Ok(outputs)
    }
}

/// A batch's logits, kept in tract's own buffer (LM logits are large: no copy).
pub struct Logits(TValue);

/// Logits as the graph produced them: f32 (float graph, level `output`) or f64 (the exact
/// decode of levels ring and sigma).
#[derive(Debug, Clone, Copy)]
pub enum LogitsView<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
}

impl Logits {
    pub fn view(&self) -> LogitsView<'_> {
        let plain = self
            .0
            .try_as_plain_ram()
            .expect("validated as plain float in Engine::run");
        if self.0.datum_type() == DatumType::F64 {
            LogitsView::F64(plain.as_slice::<f64>().expect("validated in Engine::run"))
        } else {
            LogitsView::F32(plain.as_slice::<f32>().expect("validated in Engine::run"))
        }
    }
}

impl<'a> LogitsView<'a> {
    pub fn len(&self) -> usize {
        match self {
            LogitsView::F32(v) => v.len(),
            LogitsView::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements `range` (the caller checked the shape).
    pub fn slice(&self, range: std::ops::Range<usize>) -> LogitsView<'a> {
        match self {
            LogitsView::F32(v) => LogitsView::F32(&v[range]),
            LogitsView::F64(v) => LogitsView::F64(&v[range]),
        }
    }

    /// Elements `range`, or None when it is outside.
    pub fn try_slice(&self, range: std::ops::Range<usize>) -> Option<LogitsView<'a>> {
        match self {
            LogitsView::F32(v) => v.get(range).map(LogitsView::F32),
            LogitsView::F64(v) => v.get(range).map(LogitsView::F64),
        }
    }

    /// Element `i` as f64 (exact for both types).
    pub fn get(&self, i: usize) -> f64 {
        match self {
            LogitsView::F32(v) => f64::from(v[i]),
            LogitsView::F64(v) => v[i],
        }
    }

    pub fn to_f64_vec(&self) -> Vec<f64> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }
}

/// Rows of the token embedding (the initializer a Gather indexes with `input_ids`), if the
/// graph has one: token ids at or above it mean the tokenizer does not belong to the model.
/// The ids may reach the Gather through data movement (GPT-2's exporter reshapes them
/// first) and the table through an Identity (tied weights).
pub fn embedding_rows(proto: &ModelProto) -> Option<i64> {
    const MOVES: [&str; 6] = [
        "Reshape",
        "Unsqueeze",
        "Squeeze",
        "Flatten",
        "Cast",
        "Identity",
    ];
    let graph = proto.graph.as_ref()?;
    // Follows `t` back through data movement to a graph input or initializer name.
    let source = |t: &str| -> String {
        let mut t = t.to_string();
        for _ in 0..graph.node.len() {
            let next = graph
                .node
                .iter()
                .find(|n| n.output.contains(&t))
                .filter(|n| MOVES.contains(&n.op_type.as_str()))
                .and_then(|n| n.input.first());
            match next {
                Some(i) => t.clone_from(i),
                None => break,
            }
        }
        t
    };
    graph
        .node
        .iter()
        .filter(|n| {
            n.op_type == "Gather" && n.input.get(1).is_some_and(|i| source(i) == "input_ids")
        })
        .find_map(|n| {
            let table = source(n.input.first()?);
            graph.initializer.iter().find(|t| t.name == table)
        })
        .and_then(|t| t.dims.first().copied())
}

/// Reads an ONNX file into a prost ModelProto (for the float graph when the compiler is not involved).
pub fn read_proto(path: &std::path::Path) -> Result<ModelProto> {
    use prost::Message;
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read model {}", path.display()))?;
    ModelProto::decode(bytes.as_slice())
        .map_err(|e| anyhow!("{} is not an ONNX model: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_rows_through_reshaped_ids_and_an_identity_table() {
        // GPT-2's exporter: Gather(wte, Reshape(input_ids)); tied weights via Identity.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        for (file, rows) in [
            ("gpt2_tiny_op17.onnx", 50257),
            ("bert_tiny_op17.onnx", 30522),
        ] {
            let proto = read_proto(&dir.join(file)).unwrap();
            assert_eq!(embedding_rows(&proto), Some(rows), "{file}");
        }
    }

    #[test]
    fn logits_by_name_else_the_only_output_with_a_note() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(pick_logits(&names(&["h", "logits"])).unwrap(), (1, vec![]));
        let (i, notes) = pick_logits(&names(&["output"])).unwrap();
        assert_eq!(i, 0);
        assert!(notes[0].contains("\"output\""), "{notes:?}");
        let err = pick_logits(&names(&["a", "b"])).unwrap_err().to_string();
        assert!(err.contains("none is named \"logits\""), "{err}");
    }
}
