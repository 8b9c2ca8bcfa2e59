fn main() {
    std::process::exit(suf_compiler::panic_guard::run_main(
        "suf-compile",
        suf_compiler::cli::main,
    ));
}
