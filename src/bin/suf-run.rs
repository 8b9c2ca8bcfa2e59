fn main() {
    std::process::exit(suf_compiler::panic_guard::run_main(
        "suf-run",
        suf_runner::cli::main,
    ));
}
