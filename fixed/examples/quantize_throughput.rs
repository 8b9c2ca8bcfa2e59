//! Throughput of the SUF node kernels on one core (a micro-benchmark, not a test):
//! `cargo run --release -p suf-fixed --example quantize_throughput [elements]`.

use std::time::Instant;
use suf_fixed::{FixedPoint, Rounding};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1 << 24);
    let data: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin() * 8.0).collect();
    for (n_bits, rounding) in [
        (37, Rounding::Round),
        (50, Rounding::Round),
        (50, Rounding::Trunc),
        (50, Rounding::Floor),
    ] {
        let fixed = FixedPoint::new(n_bits, 12).expect("valid format");
        let mut xs = data.clone();
        let t = Instant::now();
        let reps = 5;
        for _ in 0..reps {
            xs.copy_from_slice(&data);
            fixed.quantize_slice_f32(&mut xs, rounding).expect("finite");
        }
        let per = t.elapsed().as_secs_f64() / (reps * n) as f64;
        println!(
            "quantize n_bits={n_bits} {rounding}: {:.2} ns/element",
            per * 1e9
        );
    }
    let mut xs = data.clone();
    let t = Instant::now();
    for _ in 0..5 {
        xs.copy_from_slice(&data);
    }
    println!(
        "memcpy baseline: {:.2} ns/element",
        t.elapsed().as_secs_f64() / (5 * n) as f64 * 1e9
    );
}
