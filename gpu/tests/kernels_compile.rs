//! The kernels proper (the `__global__` functions and their launch-side helpers, which the
//! arithmetic tests do not compile) checked for syntax and types with the host compiler and
//! CUDA's thread builtins stubbed, so a broken kernel fails CI instead of the first GPU run.

mod host_harness;

#[test]
fn every_kernel_compiles_for_the_host_with_stubbed_thread_builtins() {
    let dir = tempfile::tempdir().unwrap();
    if let Err(diagnostics) = host_harness::check_kernels_compile(dir.path()) {
        panic!("the kernels do not compile:\n{diagnostics}");
    }
}

#[test]
fn a_broken_kernel_is_reported() {
    // The check itself can fail: the same program with a call to an undeclared function.
    let dir = tempfile::tempdir().unwrap();
    let broken = host_harness::KERNEL_CHECK.replace(
        "#include \"suf_ring_fn.cu\"",
        "#include \"suf_ring_fn.cu\"\nextern \"C\" __global__ void suf_broken() { no_such_function(); }",
    );
    let main = dir.path().join("kernels.cpp");
    std::fs::write(&main, broken).unwrap();
    let src_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let out = std::process::Command::new(host_harness::compiler())
        .args(["-fsyntax-only", "-std=c++17", "-I"])
        .arg(&src_dir)
        .arg(&main)
        .output()
        .unwrap();
    assert!(!out.status.success());
}
