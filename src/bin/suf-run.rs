fn main() {
    std::process::exit(suf_runner::cli::main());
}
