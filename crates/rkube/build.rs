//! Link the `rkube` executable as a fixed-address (non-PIE) program.
//!
//! Every container has a shim, a process of this same 60+ MB executable. As a PIE, the
//! dynamic loader must relocate its large `.data.rel.ro` at every start, which costs time at
//! each exec and leaves about a megabyte of private dirty pages in each shim. Non-PIE, those
//! addresses are final at link time: the pages stay shared, clean file pages.
fn main() {
    // Only for x86_64/aarch64 Linux, where the objects (compiled PIC) link fine as non-PIE.
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
