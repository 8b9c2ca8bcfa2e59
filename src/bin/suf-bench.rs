fn main() {
    std::process::exit(suf_runner::bench::main());
}
