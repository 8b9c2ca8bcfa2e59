//! Where each node of a cuda plan runs. tract-cuda leaves every op it has no kernel for on
//! the CPU, silently, with copies each way: the placement is read off the plan and reported,
//! never assumed.

use serde::{Deserialize, Serialize};
use tract_core::internal::*;
use tract_gpu::fact::DeviceTypedFactExt;
use tract_gpu::sync::{DeviceSync, DeviceSyncKind};

/// The placement of one plan's nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Nodes computing on the GPU (constants and inputs not counted).
    pub gpu_nodes: usize,
    /// Nodes computing on the CPU inside the cuda plan, as "name (op)".
    pub cpu_nodes: Vec<String>,
    /// The SUF nodes among them: each one is a warning (its tensors cross to the host and back).
    pub suf_on_cpu: Vec<String>,
    /// Host-to-device copies per run of the plan (model inputs included).
    pub copies_to_device: usize,
    /// Device-to-host copies per run (the outputs included).
    pub copies_to_host: usize,
    /// Every copy, as "producer -> consumers" (so a copy that should not be there can be
    /// traced to the ops around it).
    #[serde(default)]
    pub copies: Vec<String>,
}

/// True for the ops suf adds (SufQuantize inside tract's element-wise wrapper included).
fn is_suf_op(name: &str) -> bool {
    name.starts_with("Suf")
}

impl Placement {
    /// Reads the placement off a translated model.
    pub fn of(model: &TypedModel) -> TractResult<Placement> {
        let mut p = Placement::default();
        for id in model.eval_order()? {
            let node = model.node(id);
            if let Some(kind) = crate::translate::plain_sync(node).or_else(|| {
                node.op_as::<tract_cuda::ops::CudaFusedAxisOp>()
                    .and_then(|f| f.op.downcast_ref::<DeviceSync>())
                    .map(|s| s.kind)
            }) {
                let arrow = match kind {
                    DeviceSyncKind::ToDevice => {
                        p.copies_to_device += 1;
                        "to device"
                    }
                    DeviceSyncKind::ToHost => {
                        p.copies_to_host += 1;
                        "to host"
                    }
                };
                let label =
                    |id: usize| format!("{} ({})", model.node(id).name, model.node(id).op.name());
                let from = node
                    .inputs
                    .first()
                    .map(|i| label(i.node))
                    .unwrap_or_default();
                let to: Vec<String> = node
                    .outputs
                    .iter()
                    .flat_map(|o| o.successors.iter().map(|inlet| label(inlet.node)))
                    .collect();
                p.copies.push(format!(
                    "{from} -> {arrow} -> {}",
                    if to.is_empty() {
                        "output".into()
                    } else {
                        to.join(", ")
                    }
                ));
                continue;
            }
            if node.op_is::<tract_core::ops::source::TypedSource>()
                || node.op_is::<tract_core::ops::konst::Const>()
            {
                continue;
            }
            let on_device = !node.outputs.is_empty()
                && node
                    .outputs
                    .iter()
                    .all(|o| o.fact.as_device_fact().is_some());
            if on_device {
                p.gpu_nodes += 1;
            } else {
                let op = node.op.name();
                let entry = format!("{} ({op})", node.name);
                if is_suf_op(&op) {
                    p.suf_on_cpu.push(entry.clone());
                }
                p.cpu_nodes.push(entry);
            }
        }
        Ok(p)
    }

    /// One line for the run log.
    pub fn summary(&self) -> String {
        format!(
            "{} nodes on the GPU, {} on the CPU ({} SUF), {} copies to the device and {} to the host per run",
            self.gpu_nodes,
            self.cpu_nodes.len(),
            self.suf_on_cpu.len(),
            self.copies_to_device,
            self.copies_to_host
        )
    }

    /// The warning a user must see when SUF ops run on the CPU inside a cuda run.
    pub fn warning(&self) -> Option<String> {
        if self.suf_on_cpu.is_empty() {
            return None;
        }
        let shown: Vec<&str> = self.suf_on_cpu.iter().take(5).map(String::as_str).collect();
        let more = self.suf_on_cpu.len().saturating_sub(shown.len());
        Some(format!(
            "warning: {} SUF node(s) have no GPU kernel and run on the CPU, with copies each way: {}{}",
            self.suf_on_cpu.len(),
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_gpu::fact::DeviceFact;

    /// x -> copy to device -> (a device node) -> copy to host -> SufX on the CPU.
    fn model() -> TypedModel {
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact([4])).unwrap();
        let dev = m
            .wire_node("up", DeviceSync::new(DeviceSyncKind::ToDevice), &[x])
            .unwrap();
        let device_fact = DeviceFact::from_host(f32::fact([4]))
            .unwrap()
            .into_exotic_fact();
        // A node whose output is a device fact stands for a GPU op.
        let gpu = m
            .add_node(
                "gpu_op",
                tract_core::ops::identity::Identity,
                tvec![device_fact],
            )
            .unwrap();
        m.add_edge(dev[0], InletId::new(gpu, 0)).unwrap();
        let host = m
            .wire_node(
                "down",
                DeviceSync::new(DeviceSyncKind::ToHost),
                &[OutletId::new(gpu, 0)],
            )
            .unwrap();
        let cpu = m
            .add_node(
                "SufThing",
                tract_core::ops::identity::Identity,
                tvec![f32::fact([4])],
            )
            .unwrap();
        m.add_edge(host[0], InletId::new(cpu, 0)).unwrap();
        m.select_output_outlets(&[OutletId::new(cpu, 0)]).unwrap();
        m
    }

    #[test]
    fn counts_copies_and_names_cpu_nodes() {
        let p = Placement::of(&model()).unwrap();
        assert_eq!(p.gpu_nodes, 1);
        assert_eq!(p.copies_to_device, 1);
        assert_eq!(p.copies_to_host, 1);
        assert_eq!(
            p.copies,
            vec![
                "x (Source) -> to device -> gpu_op (Identity)".to_string(),
                "gpu_op (Identity) -> to host -> SufThing (Identity)".to_string()
            ]
        );
        assert_eq!(p.cpu_nodes, vec!["SufThing (Identity)".to_string()]);
        // Identity is not a SUF op: no warning.
        assert!(p.suf_on_cpu.is_empty());
        assert_eq!(p.warning(), None);
        assert!(p
            .summary()
            .starts_with("1 nodes on the GPU, 1 on the CPU (0 SUF)"));
    }

    #[test]
    fn a_suf_op_on_the_cpu_is_a_warning_naming_it() {
        let p = Placement {
            suf_on_cpu: (0..7).map(|i| format!("n{i} (SufRingMatMul)")).collect(),
            ..Default::default()
        };
        let w = p.warning().unwrap();
        assert!(w.contains("7 SUF node(s)"), "{w}");
        assert!(w.contains("n0 (SufRingMatMul)"), "{w}");
        assert!(w.ends_with("and 2 more"), "{w}");
    }
}
