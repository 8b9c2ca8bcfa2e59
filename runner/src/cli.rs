//! `suf-run` command line (placeholder until the runner lands).

pub fn main() -> i32 {
    eprintln!("suf-run: not implemented yet");
    2
}
