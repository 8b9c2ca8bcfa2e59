fn main() {
    std::process::exit(suf_compiler::cli::main());
}
