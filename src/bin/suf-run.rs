fn main() {
    suf_runner::allocator::keep_freed_memory();
    std::process::exit(suf_compiler::panic_guard::run_main(
        "suf-run",
        suf_runner::cli::main,
    ));
}
