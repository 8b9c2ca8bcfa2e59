//! One graph's tract plans, one per length bucket: parsed once (the SUF pass, too, ran once),
//! typed and optimised lazily for each bucket's `[batch, L]` the first time it is asked for,
//! and cached until released. Once every bucket the row needs has been built, the parsed
//! graph is dropped, so the last bucket holds no more memory than an unbucketed run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::device::Device;
use crate::engine::{Engine, Parsed};

pub struct GraphPlans {
    /// "float" or the level, for error messages.
    name: String,
    parsed: Option<Parsed>,
    device: Device,
    batch: usize,
    /// Bucket lengths not yet built.
    pending: BTreeSet<usize>,
    engines: BTreeMap<usize, Engine>,
    /// tract's parse (once).
    pub parse: Duration,
    /// Typing, optimisation and plan, per bucket length.
    pub optimise: BTreeMap<usize, Duration>,
    /// cuda plans: where the first plan built runs its nodes (every bucket's plan is the
    /// same graph at another length).
    pub placement: Option<suf_gpu::Placement>,
}

impl GraphPlans {
    /// Plans of `parsed` for the bucket `lengths` the row will ask for.
    pub fn new(
        name: &str,
        device: Device,
        parsed: Parsed,
        batch: usize,
        lengths: &[usize],
    ) -> Self {
        GraphPlans {
            name: name.to_string(),
            parse: parsed.parse,
            parsed: Some(parsed),
            device,
            batch,
            pending: lengths.iter().copied().collect(),
            engines: BTreeMap::new(),
            optimise: BTreeMap::new(),
            placement: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plan for `seq_len`, built now if it is not cached.
    pub fn engine(&mut self, seq_len: usize) -> Result<&Engine> {
        if !self.engines.contains_key(&seq_len) {
            let parsed = self.parsed.as_ref().ok_or_else(|| {
                anyhow!(
                    "{} graph: the plan for length {seq_len} was asked for after every bucket was built",
                    self.name
                )
            })?;
            let engine = Engine::from_parsed(self.device, parsed, self.batch, seq_len)
                .with_context(|| format!("inputs [{}, {seq_len}]", self.batch))?;
            *self.optimise.entry(seq_len).or_default() += engine.times.optimise;
            if let (None, Some(p)) = (&self.placement, &engine.placement) {
                eprintln!("{} graph on cuda: {}", self.name, p.summary());
                if let Some(w) = p.warning() {
                    eprintln!("{} graph: {w}", self.name);
                }
                self.placement = Some(p.clone());
            }
            self.engines.insert(seq_len, engine);
            self.pending.remove(&seq_len);
            if self.pending.is_empty() {
                self.parsed = None;
            }
        }
        Ok(&self.engines[&seq_len])
    }

    /// The cached plan for `seq_len`, if built and not released.
    pub fn get(&self, seq_len: usize) -> Option<&Engine> {
        self.engines.get(&seq_len)
    }

    /// Drops the plan for `seq_len` (its bucket is done).
    pub fn release(&mut self, seq_len: usize) {
        self.engines.remove(&seq_len);
    }

    /// Optimisation over every bucket.
    pub fn optimise_total(&self) -> Duration {
        self.optimise.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plans(lengths: &[usize]) -> GraphPlans {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/bert_tiny_op17.onnx");
        let proto = crate::suf::normalized(&crate::suf::load_model(&path).unwrap());
        let parsed = Parsed::new(&crate::suf::framework(), &proto, path.parent()).unwrap();
        GraphPlans::new("float", Device::Cpu, parsed, 2, lengths)
    }

    #[test]
    fn plans_are_built_once_per_length_and_the_parse_dropped_after_the_last() {
        let mut p = plans(&[16, 32]);
        assert_eq!(p.engine(16).unwrap().seq_len, 16);
        assert_eq!(p.engine(16).unwrap().output_shape[0], 2);
        assert_eq!(p.optimise.len(), 1);
        assert!(p.parsed.is_some());
        assert_eq!(p.engine(32).unwrap().seq_len, 32);
        assert!(
            p.parsed.is_none(),
            "every bucket built: the parse is dropped"
        );
        p.release(16);
        assert!(p.get(16).is_none());
        let Err(err) = p.engine(16) else {
            panic!("a released plan was rebuilt after the parse was dropped");
        };
        let err = format!("{err:#}");
        assert!(err.contains("after every bucket was built"), "{err}");
        assert!(p.get(32).is_some());
    }
}
