//! `suf_compiler::compile` is public: a caller may hand it a raw proto that never went
//! through `load_model_bytes` and its arity checks (validate.rs). Issue 14: a node short of
//! inputs or outputs must then be an error naming the node (or, where the edit is
//! harmless, a compiled model), never a panic.
//!
//! Each fixture in tests/fixtures is decoded with prost alone. For one node of every op
//! type, and for the nodes of the first norm and activation pattern (decomposed LayerNorm,
//! RMSNorm, both GELU forms, SiLU), the test drops the node's trailing inputs (down to none)
//! or its outputs, and compiles at every level (output, ring, sigma, output lowered) under
//! `catch_unwind`. A panic fails the test. A matched op (MatMul, Gemm, Add, Gather,
//! LayerNormalization, Softmax) cut below its required inputs must be an error naming it
//! (`node "<name>" (<op>)`); any other error must name the node, one of its tensors, or
//! something downstream of it, where the damage shows.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::Once;

use prost::Message;
use suf_compiler::graph::GraphView;
use suf_compiler::{compile, CompileOptions, Emulation, FixedPoint, ModelProto};
use tract_onnx::pb::TensorProto;

thread_local! {
    /// Set while this thread runs a guarded `compile`: its panic is a finding, reported
    /// with the location the hook keeps, not printed by the default hook.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
    static LOCATION: RefCell<String> = const { RefCell::new(String::new()) };
}

fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) {
                let at = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                LOCATION.with(|c| *c.borrow_mut() = at);
            } else {
                default(info);
            }
        }));
    });
}

/// The fixture as its bytes decode, with vocabulary-sized dimensions cut to 96 rows (as in
/// fuzz_compile.rs) so that one compile costs milliseconds.
fn raw_fixture(name: &str) -> ModelProto {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut m = ModelProto::decode(bytes.as_slice()).expect("fixture decodes");
    for t in &mut m.graph.as_mut().expect("graph").initializer {
        shrink_vocab(t);
    }
    m
}

fn shrink_vocab(t: &mut TensorProto) {
    const VOCAB_MIN: i64 = 1000;
    const KEEP: i64 = 96;
    let Some(axis) = t.dims.iter().position(|&d| d >= VOCAB_MIN) else {
        return;
    };
    if t.data_type != 1 || t.raw_data.is_empty() {
        return;
    }
    let outer: i64 = t.dims[..axis].iter().product();
    let inner: i64 = t.dims[axis + 1..].iter().product();
    let full = t.dims[axis];
    let mut raw = Vec::with_capacity((outer * KEEP * inner * 4) as usize);
    for o in 0..outer {
        let start = (o * full * inner * 4) as usize;
        raw.extend_from_slice(&t.raw_data[start..start + (KEEP * inner * 4) as usize]);
    }
    t.raw_data = raw;
    t.dims[axis] = KEEP;
}

fn levels() -> Vec<(&'static str, CompileOptions)> {
    let fixed = FixedPoint::new(37, 12).unwrap();
    let at = |emulation, lower| {
        let mut o = CompileOptions::new(fixed);
        o.emulation = emulation;
        o.lower = lower;
        o
    };
    vec![
        ("output", at(Emulation::Output, false)),
        ("ring", at(Emulation::Ring, false)),
        ("sigma", at(Emulation::Sigma, false)),
        ("output lowered", at(Emulation::Output, true)),
    ]
}

/// Indices of the nodes to damage: the first node of every op type, and the nodes around
/// the first node of each pattern's core op (Sqrt of a norm, Erf/Tanh of a GELU, Sigmoid
/// of a SiLU): up to 5 producers back and 3 consumers on, which covers the whole pattern.
fn targets(m: &ModelProto) -> Vec<usize> {
    let g = m.graph.as_ref().unwrap();
    let mut picked = BTreeSet::new();
    let mut ops = BTreeSet::new();
    for (i, n) in g.node.iter().enumerate() {
        if ops.insert(n.op_type.clone()) {
            picked.insert(i);
        }
    }
    let view = GraphView::new(g);
    let mut cores = 0;
    for core in ["Sqrt", "Erf", "Tanh", "Sigmoid"] {
        let Some(start) = g.node.iter().position(|n| n.op_type == core) else {
            continue;
        };
        cores += 1;
        let mut back = vec![start];
        let mut on = vec![start];
        for depth in 0..5 {
            back = back
                .iter()
                .flat_map(|&i| g.node[i].input.iter().filter_map(|t| view.producer(t)))
                .collect();
            picked.extend(back.iter().copied());
            if depth < 3 {
                on = on
                    .iter()
                    .flat_map(|&i| g.node[i].output.iter())
                    .flat_map(|t| view.consumers(t).iter().copied())
                    .collect();
                picked.extend(on.iter().copied());
            }
        }
    }
    assert!(cores >= 1, "expected a norm or activation pattern");
    picked.into_iter().collect()
}

/// One damage done to a node.
#[derive(Debug, Clone, Copy)]
enum Edit {
    /// Only the first `.0` of its `.1` inputs kept.
    Inputs(usize, usize),
    NoOutputs,
}

impl std::fmt::Display for Edit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Edit::Inputs(keep, of) => write!(f, "inputs cut to {keep} of {of}"),
            Edit::NoOutputs => f.write_str("outputs removed"),
        }
    }
}

/// The damaged copies of node `i`: each shorter prefix of its inputs, and no outputs.
fn edits(m: &ModelProto, i: usize) -> Vec<(Edit, ModelProto)> {
    let n = &m.graph.as_ref().unwrap().node[i];
    let mut out = vec![];
    for keep in (0..n.input.len()).rev() {
        let mut e = m.clone();
        e.graph.as_mut().unwrap().node[i].input.truncate(keep);
        out.push((Edit::Inputs(keep, n.input.len()), e));
    }
    if !n.output.is_empty() {
        let mut e = m.clone();
        e.graph.as_mut().unwrap().node[i].output.clear();
        out.push((Edit::NoOutputs, e));
    }
    out
}

/// Ops the pass matches on their own, with the inputs ONNX requires of them: without those
/// they are an error naming the node at every level.
fn required_by_the_matcher(op: &str) -> Option<usize> {
    match op {
        "MatMul" | "Gemm" | "Add" | "Gather" | "LayerNormalization" => Some(2),
        "Softmax" => Some(1),
        _ => None,
    }
}

/// Names an error may point at when node `i` is damaged: the node (an unnamed one by its op
/// type), and the nodes downstream of it with their tensors (an Identity that aliases a
/// LayerNorm's bias, cut, shows as that LayerNorm, named by its anchor, lacking a shift).
fn affected_names(m: &ModelProto, i: usize) -> BTreeSet<String> {
    let g = m.graph.as_ref().unwrap();
    let view = GraphView::new(g);
    let mut names = BTreeSet::new();
    let n = &g.node[i];
    names.insert(if n.name.is_empty() {
        n.op_type.clone()
    } else {
        n.name.clone()
    });
    let mut seen = BTreeSet::from([i]);
    let mut todo = vec![i];
    while let Some(k) = todo.pop() {
        let node = &g.node[k];
        names.insert(node.name.clone());
        names.extend(node.input.iter().chain(&node.output).cloned());
        for t in &node.output {
            for &c in view.consumers(t) {
                if seen.insert(c) {
                    todo.push(c);
                }
            }
        }
    }
    names.remove("");
    names
}

#[derive(Default)]
struct Tally {
    ok: usize,
    err: usize,
    /// Errors for a matched op short of its required inputs (each must name the node).
    required_cut: usize,
    failures: Vec<String>,
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

fn check_fixture(file: &str) {
    install_hook();
    let model = raw_fixture(file);
    let levels = levels();
    let nodes = targets(&model);
    let mut tally = Tally::default();
    for &i in &nodes {
        let node = &model.graph.as_ref().unwrap().node[i];
        let affected = affected_names(&model, i);
        for (keep, damaged) in edits(&model, i) {
            // A matched op without its required inputs: the error names the node itself.
            let strict = match (keep, required_by_the_matcher(&node.op_type)) {
                (Edit::Inputs(k, _), Some(need)) => k < need,
                _ => false,
            };
            for (level, opts) in &levels {
                let case = format!(
                    "{file}: node {} ({}) {keep}, level {level}",
                    node.name, node.op_type
                );
                GUARDED.with(|g| g.set(true));
                let result = panic::catch_unwind(AssertUnwindSafe(|| compile(&damaged, opts)));
                GUARDED.with(|g| g.set(false));
                match result {
                    Err(payload) => {
                        let at = LOCATION.with(|l| l.borrow().clone());
                        let msg = panic_text(payload.as_ref());
                        tally
                            .failures
                            .push(format!("{case}: PANIC {msg} (at {at})"));
                    }
                    Ok(Ok(_)) if strict => {
                        tally.failures.push(format!("{case}: compiled"));
                    }
                    Ok(Ok(_)) => tally.ok += 1,
                    Ok(Err(e)) => {
                        tally.err += 1;
                        let msg = format!("{e:#}");
                        if strict {
                            tally.required_cut += 1;
                            if !msg.contains(&format!("\"{}\" ({})", node.name, node.op_type)) {
                                tally
                                    .failures
                                    .push(format!("{case}: error does not name the node: {msg}"));
                            }
                        } else if !affected.iter().any(|t| msg.contains(t.as_str())) {
                            tally.failures.push(format!(
                                "{case}: error names nothing the damage reaches: {msg}"
                            ));
                        }
                    }
                }
            }
        }
    }
    eprintln!(
        "{file}: {} nodes damaged, {} compiles ok, {} errors ({} for a matched op short of \
         its required inputs), {} failures",
        nodes.len(),
        tally.ok,
        tally.err,
        tally.required_cut,
        tally.failures.len()
    );
    assert!(
        tally.failures.is_empty(),
        "{} of {} cases failed:\n{}",
        tally.failures.len(),
        tally.ok + tally.err + tally.failures.len(),
        tally.failures.join("\n")
    );
    assert!(
        tally.required_cut >= 4,
        "{file}: no matched op was cut below its required inputs"
    );
}

#[test]
fn bert_tiny_op14_raw_proto_with_short_nodes_is_an_error_not_a_panic() {
    check_fixture("bert_tiny_op14.onnx");
}

#[test]
fn bert_tiny_op17_raw_proto_with_short_nodes_is_an_error_not_a_panic() {
    check_fixture("bert_tiny_op17.onnx");
}

#[test]
fn gpt2_tiny_op14_raw_proto_with_short_nodes_is_an_error_not_a_panic() {
    check_fixture("gpt2_tiny_op14.onnx");
}

#[test]
fn gpt2_tiny_op17_raw_proto_with_short_nodes_is_an_error_not_a_panic() {
    check_fixture("gpt2_tiny_op17.onnx");
}

#[test]
fn gptneo_tiny_op17_raw_proto_with_short_nodes_is_an_error_not_a_panic() {
    check_fixture("gptneo_tiny_op17.onnx");
}

#[test]
fn llama_tiny_op17_raw_proto_with_short_nodes_is_an_error_not_a_panic() {
    check_fixture("llama_tiny_op17.onnx");
}
