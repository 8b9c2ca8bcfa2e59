//! Per-node statistics the SUF ops record while they run, for `suf-run --diagnose`.
//!
//! Recording is off unless a caller turns it on: the ops then pay one relaxed atomic load
//! per evaluation. The recorder is process-wide because tract builds the ops from the ONNX
//! parser, where no handle of ours can be threaded through.

use crate::options::Emulation;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// What one SUF node saw over every evaluation since recording was turned on.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeStats {
    /// Largest |value| reaching the node's encoding at scale f, in real units.
    pub max_abs: f64,
    /// Values that fell outside the ring at scale f (|x| >= 2^(n-1-f)) and wrapped.
    pub overflows: usize,
    /// Largest |product + bias| at scale 2f before truncation (ring products only).
    pub max_abs_2f: Option<f64>,
    /// Products that fell outside the ring at scale 2f (|y| >= 2^(n-1-2f)) and wrapped.
    pub overflows_2f: usize,
    /// SIGMA row ops (softmax, LayerNorm, RMSNorm): the ring size their intermediates need
    /// (sums, the sum of squares read as unsigned, products before truncation).
    pub internal_bits: Option<u32>,
    /// Rows whose intermediates did not fit the ring (internal_bits > n) and wrapped.
    pub internal_overflows: usize,
    /// Elements processed.
    pub elements: usize,
    /// Largest |value| of the ring tensor the node output (levels ring and sigma), in real
    /// units: the magnitude the transport between SUF nodes had to carry exactly.
    pub max_abs_carried: f64,
}

static ENABLED: AtomicBool = AtomicBool::new(false);

/// The largest |value| (real units, as f64 bits: non-negative floats order like their
/// bits) any SUF node of each emulation level output since the last reset. Always on: one
/// relaxed atomic max per node evaluation, so every run reports it.
static CARRIED: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

fn slot(level: Emulation) -> &'static AtomicU64 {
    &CARRIED[level as usize]
}

/// Forgets the carried maxima (before evaluating a row).
pub fn reset_carried() {
    for c in &CARRIED {
        c.store(0, Ordering::Relaxed);
    }
}

/// The largest |value| a SUF node of `level` carried since the last reset, in real units.
pub fn carried_max(level: Emulation) -> f64 {
    f64::from_bits(slot(level).load(Ordering::Relaxed))
}

/// Folds a SUF node's carried maximum in (public for the GPU ops, which record as the CPU ops do).
pub fn note_carried(level: Emulation, max_abs: f64) {
    slot(level).fetch_max(max_abs.abs().to_bits(), Ordering::Relaxed);
}
static STATS: Mutex<BTreeMap<String, NodeStats>> = Mutex::new(BTreeMap::new());

/// Turns recording on or off; turning it on clears what was recorded before.
pub fn set_enabled(on: bool) {
    if on {
        STATS.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
    ENABLED.store(on, Ordering::Relaxed);
}

#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Takes what was recorded, keyed by SUF node name.
pub fn take() -> BTreeMap<String, NodeStats> {
    std::mem::take(&mut *STATS.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Folds one evaluation's numbers into the node's record (the CPU ops and the GPU ops alike).
pub fn record(node: &str, update: impl FnOnce(&mut NodeStats)) {
    let mut map = STATS.lock().unwrap_or_else(|e| e.into_inner());
    update(map.entry(node.to_string()).or_default());
}

/// max |x| and the count of |x| >= bound over a slice, for the encoding at scale f.
pub(crate) fn scan_f32(xs: &[f32], bound: f64) -> (f64, usize) {
    xs.iter().fold((0.0f64, 0usize), |(m, c), &x| {
        let a = (x as f64).abs();
        (m.max(a), c + (a >= bound) as usize)
    })
}
