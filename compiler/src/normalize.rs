//! Graph clean-ups applied before matching; each one is reported in the summary.
//!
//! - stale `value_info` is dropped: exporters' symbolic shapes clash with the fixed input
//!   facts the runner sets (SPEC.md section 7);
//! - inference-time `Identity` and `Dropout` nodes are removed, so patterns match through them;
//! - `Pow(x, 2)` and `Pow(x, 3)` become multiplications: exact, what PyTorch computes, and
//!   tract's PowConst is ~10x slower than the whole rest of a GPT-2 block (SPEC.md section 7).

use crate::graph::GraphView;
use std::collections::HashMap;
use tract_onnx::pb::{GraphProto, NodeProto};

pub fn normalize(graph: &mut GraphProto) -> Vec<String> {
    let mut notes = vec![];
    if !graph.value_info.is_empty() {
        notes.push(format!(
            "dropped {} stale value_info entries",
            graph.value_info.len()
        ));
        graph.value_info.clear();
    }
    let removed = remove_passthrough(graph);
    if removed > 0 {
        notes.push(format!(
            "removed {removed} inference-time Identity/Dropout nodes"
        ));
    }
    let pows = expand_small_pows(graph);
    if pows > 0 {
        notes.push(format!("rewrote {pows} Pow(x, 2|3) as multiplications"));
    }
    let dropped = drop_unused_initializers(graph);
    if dropped > 0 {
        notes.push(format!(
            "dropped {dropped} constants no node reads any more"
        ));
    }
    notes
}

/// The rewrites above can orphan constants (Pow exponents); runtimes warn about them.
fn drop_unused_initializers(graph: &mut GraphProto) -> usize {
    let used: std::collections::HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .chain(graph.output.iter().map(|o| o.name.clone()))
        .collect();
    let before = graph.initializer.len() + graph.node.len();
    graph.initializer.retain(|t| used.contains(&t.name));
    graph
        .node
        .retain(|n| n.op_type != "Constant" || n.output.iter().any(|o| used.contains(o)));
    before - graph.initializer.len() - graph.node.len()
}

fn remove_passthrough(graph: &mut GraphProto) -> usize {
    let outputs: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    let mut rename: HashMap<String, String> = HashMap::new();
    graph.node.retain(|n| {
        let passthrough = (n.op_type == "Identity" || n.op_type == "Dropout")
            && !n.input.is_empty()
            && !n.output.is_empty()
            // Dropout's optional mask output is read by no inference graph; keep it if it is.
            && n.output.iter().skip(1).all(|o| o.is_empty())
            && !outputs.contains(&n.output[0]);
        if passthrough {
            rename.insert(n.output[0].clone(), n.input[0].clone());
        }
        !passthrough
    });
    // At most one step per removed node: a cycle of Identities (a -> b -> a, found by the
    // fuzz campaign) would otherwise loop for ever. It stops at some name of the cycle, which
    // no node produces any more, so loading fails with an error naming it.
    let resolve = |name: &str| {
        let mut name = name.to_string();
        for _ in 0..rename.len() {
            match rename.get(&name) {
                Some(next) => name.clone_from(next),
                None => break,
            }
        }
        name
    };
    for n in graph.node.iter_mut() {
        for i in n.input.iter_mut() {
            if rename.contains_key(i.as_str()) {
                *i = resolve(i);
            }
        }
    }
    rename.len()
}

fn expand_small_pows(graph: &mut GraphProto) -> usize {
    let targets: Vec<(usize, u32)> = {
        let view = GraphView::new(graph);
        graph
            .node
            .iter()
            .enumerate()
            .filter(|(_, n)| n.op_type == "Pow" && n.input.len() == 2 && !n.output.is_empty())
            .filter_map(|(i, n)| match view.scalar(&n.input[1]) {
                Some(e) if e == 2.0 || e == 3.0 => Some((i, e as u32)),
                _ => None,
            })
            .collect()
    };
    for &(i, exponent) in targets.iter().rev() {
        let pow = graph.node[i].clone();
        // Two inputs and an output: checked when collecting the targets.
        let (x, y) = (&pow.input[0], &pow.output[0]);
        let mul = |name: String, a: &str, b: &str, out: &str| NodeProto {
            name,
            op_type: "Mul".into(),
            input: vec![a.into(), b.into()],
            output: vec![out.into()],
            ..Default::default()
        };
        let replacement = if exponent == 2 {
            vec![mul(format!("{}.square", pow.name), x, x, y)]
        } else {
            let sq = format!("{y}.square");
            vec![
                mul(format!("{}.square", pow.name), x, x, &sq),
                mul(format!("{}.cube", pow.name), &sq, x, y),
            ]
        };
        graph.node.splice(i..=i, replacement);
    }
    targets.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::GraphBuilder;

    #[test]
    fn removes_identity_and_expands_cube() {
        let mut b = GraphBuilder::new("n");
        b.input_f32("x", &[4]);
        b.scalar("three", 3.0);
        b.node("Identity", &["x"], &["xi"]);
        b.node("Dropout", &["xi"], &["xd"]);
        b.node("Pow", &["xd", "three"], &["cube"]);
        b.node("Relu", &["cube"], &["y"]);
        b.output("y");
        let mut g = b.build().graph.unwrap();
        let notes = normalize(&mut g);
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(
            g.initializer.is_empty(),
            "the exponent 3 is orphaned and dropped"
        );
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Mul", "Mul", "Relu"]);
        assert_eq!(g.node[0].input, ["x", "x"]);
        assert_eq!(g.node[1].input[1], "x");
        assert_eq!(g.node[1].output[0], "cube");
    }

    #[test]
    fn an_identity_cycle_ends_instead_of_looping() {
        // Fuzz finding: a -> b -> a made the rename walk loop for ever.
        let mut b = GraphBuilder::new("n");
        b.input_f32("x", &[4]);
        b.node("Identity", &["b"], &["a"]);
        b.node("Identity", &["a"], &["b"]);
        b.node("Add", &["x", "a"], &["y"]);
        b.output("y");
        let mut g = b.build().graph.unwrap();
        normalize(&mut g);
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Add"]);
        assert!(["a", "b"].contains(&g.node[0].input[1].as_str()));
    }

    #[test]
    fn keeps_identity_that_is_a_graph_output_and_other_pows() {
        let mut b = GraphBuilder::new("n");
        b.input_f32("x", &[4]);
        b.scalar("half", 0.5);
        b.node("Pow", &["x", "half"], &["r"]);
        b.node("Identity", &["r"], &["y"]);
        b.output("y");
        let mut g = b.build().graph.unwrap();
        assert!(normalize(&mut g).is_empty());
        assert_eq!(g.node.len(), 2);
    }
}
