//! `suf-bench --compare-devices`: one batch through every graph on the CPU and on the GPU,
//! and every tensor a SUF node output compared between the two, bit for bit (issue: the
//! contract "CPU and GPU paths produce identical SUF tensors"). Float logits may differ by
//! float rounding: their largest difference is reported, and the predictions must agree.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tract_onnx::prelude::*;

use crate::device::Device;
use crate::engine::{Engine, TokenBatch};

/// One graph's comparison.
#[derive(Debug, Clone, Serialize)]
pub struct GraphComparison {
    pub graph: String,
    /// SUF tensors compared (the logits not counted).
    pub tensors: usize,
    /// Elements compared over those tensors.
    pub elements: u64,
    /// Tensors with at least one differing element, as "name: k of m differ".
    pub differing: Vec<String>,
    /// Largest |cpu - cuda| over the logits (0 for exact graphs that agree).
    pub logits_max_abs_diff: f64,
    /// Levels ring and sigma: every SUF tensor and the logits must be equal bit for bit.
    /// Float and level `output` compute in f32 on both devices, with different kernels:
    /// their differences are reported, and only their predictions must agree.
    pub exact: bool,
    pub logits_equal: bool,
    /// Rows (examples, or positions of an LM) whose argmax differs.
    pub prediction_flips: usize,
    pub rows: usize,
    /// Where the cuda plan ran its nodes.
    pub placement: Option<suf_gpu::Placement>,
    /// Level `ring`: tensors of the cuda run whose float functions had an output the GPU
    /// could not certify, recomputed on the CPU (suf-gpu's ring_fn.rs).
    pub ring_tensors_recomputed_on_cpu: u64,
}

impl GraphComparison {
    pub fn passed(&self) -> bool {
        self.prediction_flips == 0
            && (!self.exact || (self.differing.is_empty() && self.logits_equal))
    }
}

/// The tensor names every SUF node of `model` outputs (for the float graph: none).
pub fn suf_tensors(model: &tract_onnx::pb::ModelProto) -> Vec<String> {
    let Some(graph) = model.graph.as_ref() else {
        return vec![];
    };
    let outputs: std::collections::HashSet<&str> =
        graph.output.iter().map(|o| o.name.as_str()).collect();
    graph
        .node
        .iter()
        .filter(|n| n.domain == suf_compiler::SUF_DOMAIN)
        .flat_map(|n| n.output.iter())
        .filter(|o| !o.is_empty() && !outputs.contains(o.as_str()))
        .cloned()
        .collect()
}

/// Bitwise equality of two tensors of the same type, counting differing elements.
fn differing_elements(a: &Tensor, b: &Tensor) -> Result<(u64, u64)> {
    if a.datum_type() != b.datum_type() || a.shape() != b.shape() {
        bail!(
            "{:?}{:?} on the CPU, {:?}{:?} on the GPU",
            a.datum_type(),
            a.shape(),
            b.datum_type(),
            b.shape()
        );
    }
    let width = a.datum_type().size_of().max(1);
    let (a, b) = (a.try_as_plain_ram()?, b.try_as_plain_ram()?);
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let diff = a
        .chunks(width)
        .zip(b.chunks(width))
        .filter(|(x, y)| x != y)
        .count() as u64;
    Ok((diff, (a.len() / width) as u64))
}

/// argmax of each row of the last axis.
fn argmaxes(values: &[f64], width: usize) -> Vec<usize> {
    values
        .chunks(width.max(1))
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &v)| {
                    if v > bv {
                        (i, v)
                    } else {
                        (bi, bv)
                    }
                })
                .0
        })
        .collect()
}

fn as_f64(t: &Tensor) -> Result<Vec<f64>> {
    let t = t.cast_to::<f64>()?;
    Ok(t.try_as_plain_ram()?.as_slice::<f64>()?.to_vec())
}

/// Builds `model` on both devices with its SUF tensors as probes, runs `tb` and compares.
pub fn compare(
    name: &str,
    framework: &tract_onnx::Onnx,
    model: &tract_onnx::pb::ModelProto,
    dir: Option<&std::path::Path>,
    tb: &TokenBatch,
    exact: bool,
) -> Result<GraphComparison> {
    let probes = suf_tensors(model);
    let build = |device| {
        Engine::with_probes_on(device, framework, model, dir, tb.batch, tb.seq_len, &probes)
            .with_context(|| format!("{name} graph on {device}"))
    };
    let cpu = build(Device::Cpu)?;
    let cuda = build(Device::Cuda)?;
    let on_cpu = cpu.run_all(tb).context("cpu run")?;
    let recomputed_before = suf_gpu::ring_fn::host_recomputed();
    let on_cuda = cuda.run_all(tb).context("cuda run")?;
    let recomputed = suf_gpu::ring_fn::host_recomputed() - recomputed_before;
    let mut cmp = GraphComparison {
        graph: name.to_string(),
        tensors: probes.len(),
        elements: 0,
        differing: vec![],
        logits_max_abs_diff: 0.0,
        exact,
        logits_equal: false,
        prediction_flips: 0,
        rows: 0,
        placement: cuda.placement.clone(),
        ring_tensors_recomputed_on_cpu: recomputed,
    };
    for (probe, (a, b)) in probes.iter().zip(on_cpu.iter().zip(&on_cuda).skip(1)) {
        let (diff, n) = differing_elements(a, b).with_context(|| format!("SUF tensor {probe}"))?;
        cmp.elements += n;
        if diff > 0 {
            cmp.differing.push(format!("{probe}: {diff} of {n} differ"));
        }
    }
    let (a, b) = (&on_cpu[0], &on_cuda[0]);
    cmp.logits_equal = differing_elements(a, b).context("logits")?.0 == 0;
    let (fa, fb) = (as_f64(a)?, as_f64(b)?);
    cmp.logits_max_abs_diff = fa
        .iter()
        .zip(&fb)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    let width = a.shape().last().copied().unwrap_or(1);
    let (pa, pb) = (argmaxes(&fa, width), argmaxes(&fb, width));
    cmp.rows = pa.len();
    cmp.prediction_flips = pa.iter().zip(&pb).filter(|(x, y)| x != y).count();
    Ok(cmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_differing_elements_bit_for_bit() {
        let a = tensor1(&[1i64, 2, 3, 4]);
        let b = tensor1(&[1i64, 2, 5, 4]);
        assert_eq!(differing_elements(&a, &b).unwrap(), (1, 4));
        assert_eq!(differing_elements(&a, &a).unwrap(), (0, 4));
        // -0.0 and 0.0 are equal numbers but different bits: a difference here.
        let z = tensor1(&[0.0f32]);
        let nz = tensor1(&[-0.0f32]);
        assert_eq!(differing_elements(&z, &nz).unwrap(), (1, 1));
        assert!(differing_elements(&a, &tensor1(&[1i64])).is_err());
    }

    #[test]
    fn argmax_per_row() {
        assert_eq!(argmaxes(&[0.0, 2.0, 1.0, 5.0, 4.0, 3.0], 3), vec![1, 0]);
    }

    #[test]
    fn a_comparison_passes_only_when_nothing_differs() {
        let mut c = GraphComparison {
            graph: "ring".into(),
            tensors: 1,
            elements: 4,
            differing: vec![],
            logits_max_abs_diff: 0.0,
            exact: true,
            logits_equal: true,
            prediction_flips: 0,
            rows: 1,
            placement: None,
            ring_tensors_recomputed_on_cpu: 0,
        };
        assert!(c.passed());
        c.logits_equal = false;
        assert!(!c.passed());
        c.logits_equal = true;
        c.differing.push("t: 1 of 4 differ".into());
        assert!(!c.passed());
        c.exact = false;
        assert!(c.passed());
        c.prediction_flips = 1;
        assert!(!c.passed());
    }
}
