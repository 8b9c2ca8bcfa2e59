//! Reference vs pipeline, tensor by tensor in the reference's dataflow order, so the first
//! line of a failure names the first SUF tensor that went wrong.

use crate::layers::Trace;
use crate::pipeline::{Pipeline, Values};
use crate::ring::{Ring, RingTensor};

/// How many differing elements a report shows per tensor.
const SHOWN: usize = 4;
/// How many problem tensors a case report lists after the first one.
const LISTED: usize = 8;

fn index(shape: &[usize], mut flat: usize) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (i, &d) in shape.iter().enumerate().rev() {
        idx[i] = flat % d.max(1);
        flat /= d.max(1);
    }
    idx
}

/// The pipeline's values as ring integers; an f32 value off the 2^-f grid has none.
fn as_ring(ring: &Ring, v: &Values) -> Option<Vec<Option<i64>>> {
    let scale = 2f64.powi(ring.f as i32);
    match v {
        Values::I64(q) => Some(q.iter().map(|&q| Some(q)).collect()),
        Values::F32(x) => Some(x.iter().map(|&x| on_grid(x as f64 * scale)).collect()),
        Values::F64(x) => Some(x.iter().map(|&x| on_grid(x * scale)).collect()),
        Values::Other(_) => None,
    }
}

fn on_grid(q: f64) -> Option<i64> {
    (q.is_finite() && q.fract() == 0.0).then_some(q as i64)
}

fn show(v: Option<i64>, ring: &Ring) -> String {
    match v {
        Some(q) => format!("{q} ({})", ring.real(q)),
        None => "off the 2^-f grid".into(),
    }
}

/// Element differences between the reference and the pipeline's values.
fn diff(ring: &Ring, r: &RingTensor, got: &[Option<i64>]) -> Option<String> {
    let bad: Vec<usize> = (0..r.data.len())
        .filter(|&i| got[i] != Some(r.data[i]))
        .collect();
    if bad.is_empty() {
        return None;
    }
    let shown: Vec<String> = bad
        .iter()
        .take(SHOWN)
        .map(|&i| {
            format!(
                "{:?} ref {} pipeline {}",
                index(&r.shape, i),
                show(Some(r.data[i]), ring),
                show(got[i], ring)
            )
        })
        .collect();
    Some(format!(
        "{} of {} elements differ: {}",
        bad.len(),
        r.data.len(),
        shown.join("; ")
    ))
}

/// What the pipeline did with one reference tensor.
struct Check {
    site: String,
    /// Empty: bit for bit equal, an i64 tensor of a SUF node.
    problems: Vec<String>,
    values_differ: bool,
}

fn check_tensor(ring: &Ring, name: &str, r: &RingTensor, p: &Pipeline) -> Check {
    let Some(producer) = p.producers.get(name) else {
        return Check {
            site: "-".into(),
            problems: vec!["no tensor of this name in the compiled graph".into()],
            values_differ: false,
        };
    };
    let site = format!("node `{}`, op {}", producer.node, producer.op);
    let mut check = Check {
        site,
        problems: vec![],
        values_differ: false,
    };
    let problems = &mut check.problems;
    if !producer.is_suf() {
        problems.push("not produced by a SUF node".into());
        return check;
    }
    let Some(read) = p.tensors.get(name) else {
        problems.push("not read back from tract (see the pipeline error)".into());
        return check;
    };
    match &read.values {
        Values::I64(_) => {}
        Values::F32(_) | Values::F64(_) => {
            problems.push("float tensor (the contract: ring values are i64)".into())
        }
        Values::Other(dt) => problems.push(format!("{dt} tensor (the contract: i64)")),
    }
    if read.shape != r.shape {
        problems.push(format!("shape {:?}, reference {:?}", read.shape, r.shape));
    }
    let d = match as_ring(ring, &read.values) {
        Some(got) if got.len() == r.data.len() => diff(ring, r, &got),
        Some(got) => Some(format!("{} values, reference {}", got.len(), r.data.len())),
        None => None,
    };
    check.values_differ = d.is_some();
    check.problems.extend(d);
    check
}

/// One reference tensor the pipeline does not reproduce.
struct Failing {
    line: String,
    /// Some element differs (not only the dtype, the producer or the name).
    values: bool,
}

/// The case's verdict: `None` when every tensor matched, else the report.
pub fn compare(ring: &Ring, trace: &Trace, p: &Pipeline, extra: &[String]) -> Option<String> {
    let mut lines = vec![];
    if let Some(e) = &p.error {
        lines.push(format!("pipeline error: {e}"));
    }
    let mut failing = vec![];
    let mut reproduced = 0;
    for (name, r) in &trace.tensors {
        let c = check_tensor(ring, name, r, p);
        if c.problems.is_empty() {
            reproduced += 1;
        } else {
            failing.push(Failing {
                values: c.values_differ,
                line: format!("`{name}` ({}): {}", c.site, c.problems.join("; ")),
            });
        }
    }
    // The decoded graph output must be the ring logits at scale f, exactly.
    if let Some((_, r)) = trace.tensors.iter().find(|(n, _)| n == "logits.ring") {
        let problem = match p.tensors.get("logits") {
            Some(read) => match (&read.values, as_ring(ring, &read.values)) {
                (Values::F64(_), Some(got)) if got.len() == r.data.len() => diff(ring, r, &got),
                _ => {
                    Some("not f64 of the logits' size (the contract: outputs decode to f64)".into())
                }
            },
            None => Some("not read back".into()),
        };
        if let Some(d) = problem {
            failing.push(Failing {
                line: format!("`logits` (the decoded graph output vs logits.ring * 2^-f): {d}"),
                values: true,
            });
        }
    }
    let modelled: Vec<&str> = trace.tensors.iter().map(|(n, _)| n.as_str()).collect();
    let unmodelled: Vec<String> = p
        .suf_outputs
        .iter()
        .filter(|n| !modelled.contains(&n.as_str()))
        .filter(|n| p.producers[*n].op != "SufRingDecode")
        .map(|n| format!("`{n}` ({})", p.producers[n].op))
        .collect();
    if failing.is_empty() && unmodelled.is_empty() && extra.is_empty() && p.error.is_none() {
        return None;
    }
    let first_any = failing.first();
    let first_value = failing.iter().find(|f| f.values);
    if let Some(f) = first_any {
        lines.push(format!(
            "first SUF tensor off the contract (topological order): {}",
            f.line
        ));
    }
    if let (Some(v), Some(a)) = (first_value, first_any) {
        if !std::ptr::eq(v, a) {
            lines.push(format!("first SUF tensor whose values differ: {}", v.line));
        }
    }
    let not_shown = |f: &&Failing| {
        !first_any.is_some_and(|a| std::ptr::eq(*f, a))
            && !first_value.is_some_and(|v| std::ptr::eq(*f, v))
    };
    let differ: Vec<&Failing> = failing
        .iter()
        .filter(not_shown)
        .filter(|f| f.values)
        .collect();
    let other: Vec<&Failing> = failing
        .iter()
        .filter(not_shown)
        .filter(|f| !f.values)
        .collect();
    lines.push(format!(
        "{} reference tensors: {reproduced} reproduced, {} with differing values, {} with equal values but another problem",
        trace.tensors.len(),
        failing.iter().filter(|f| f.values).count(),
        failing.iter().filter(|f| !f.values).count(),
    ));
    for f in differ.iter().take(LISTED) {
        lines.push(format!("  then {}", f.line));
    }
    if differ.len() > LISTED {
        lines.push(format!(
            "  ... and {} more with differing values",
            differ.len() - LISTED
        ));
    }
    if let Some(f) = other.first() {
        lines.push(format!(
            "  equal values, other problems in {} more, e.g. {}",
            other.len(),
            f.line
        ));
    }
    if !unmodelled.is_empty() {
        lines.push(format!(
            "{} SUF tensors in the pipeline that the contract does not name: {}",
            unmodelled.len(),
            unmodelled.join(", ")
        ));
    }
    lines.extend(extra.iter().cloned());
    Some(lines.join("\n  "))
}
