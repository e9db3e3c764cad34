//! Links the `startgate` binary as a position-dependent (non-PIE) executable on Linux.
//!
//! A PIE binary carries some 200 KiB of relative relocations that the dynamic loader reads and
//! applies on every start, dirtying 130 KiB of `.data.rel.ro` as it goes: about 250 KiB of
//! resident memory and a few hundred page faults for each `init`, where the budget is 8 MB
//! (README, "Benchmarks"). Without PIE the linker resolves them once. What is given up is
//! address randomisation of startgate's own code (shared libraries are still randomised); Go
//! builds its binaries the same way by default. Only the binary is linked so: the library,
//! tests and build tools are untouched. Only against glibc: the image's static musl build
//! (Dockerfile) is left as the toolchain makes it.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu" {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
