//! `suf-compile` command line (placeholder until the compiler lands).

pub fn main() -> i32 {
    eprintln!("suf-compile: not implemented yet");
    2
}
