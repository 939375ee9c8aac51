//! Build script of the command-line tool. Without the `io-uring` feature it does nothing: the
//! tool then needs no C toolchain. With it (Linux), it compiles the C-level benchmark loops
//! (csrc/helix_floor.c) and generates bindings for their header. The loops call the library's
//! C shim, which the library compiles and links (it is not compiled again here): its header
//! directory comes from the library's build script (DEP_HELIX_URING_INCLUDE, `links =
//! "helix_uring"`), liburing's from uring-sys2 (DEP_URING_INCLUDE). Writes only into OUT_DIR.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let feature_on = std::env::var_os("CARGO_FEATURE_IO_URING").is_some();
    let linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    if feature_on && linux {
        #[cfg(feature = "io-uring")]
        floor::build();
    }
}

#[cfg(feature = "io-uring")]
mod floor {
    use std::env;
    use std::path::{Path, PathBuf};

    /// The loops' directory, source and header.
    const FLOOR_DIR: &str = "csrc";
    const FLOOR_SOURCE: &str = "csrc/helix_floor.c";
    const FLOOR_HEADER: &str = "csrc/helix_floor.h";
    /// The library's shim header, for `struct helix_ring_config` in the bindings.
    const SHIM_HEADER: &str = "helix_uring.h";

    pub fn build() {
        println!("cargo:rerun-if-changed={FLOOR_DIR}");
        let shim_include = dependency_include("DEP_HELIX_URING_INCLUDE", "helix-wal");
        let liburing_include = dependency_include("DEP_URING_INCLUDE", "uring-sys2");
        compile_floor(&shim_include, &liburing_include);
        generate_bindings(&shim_include);
    }

    /// A header directory a dependency's build script exported.
    fn dependency_include(variable: &str, dependency: &str) -> PathBuf {
        match env::var_os(variable) {
            Some(path) => PathBuf::from(path),
            None => fail(&format!(
                "{variable} is not set: the {dependency} dependency did not export its header \
                 directory (is the io-uring feature of {dependency} on?)"
            )),
        }
    }

    /// Compiles the loops with warnings as errors, as the library compiles its shim. liburing's
    /// header is a system include so that its own code is not held to our warning flags.
    fn compile_floor(shim_include: &Path, liburing_include: &Path) {
        cc::Build::new()
            .file(FLOOR_SOURCE)
            .include(FLOOR_DIR)
            .include(shim_include)
            .flag("-isystem")
            .flag(utf8(liburing_include))
            .flag("-std=gnu11")
            .flag("-Wall")
            .flag("-Wextra")
            .flag("-Werror")
            .warnings(false)
            .compile("helix_floor");
    }

    /// Bindings for the loops' header only, with the shim's ring configuration they take.
    fn generate_bindings(shim_include: &Path) {
        let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_else(|| fail("OUT_DIR unset")));
        let bindings = bindgen::Builder::default()
            .header(utf8(&shim_include.join(SHIM_HEADER)))
            .header(FLOOR_HEADER)
            .allowlist_function("helix_floor_.*")
            .allowlist_type("helix_floor_.*|helix_ring_config|helix_task_run")
            .allowlist_var("HELIX_FLOOR_.*|HELIX_TASKRUN_.*")
            .default_enum_style(bindgen::EnumVariation::Consts)
            .prepend_enum_name(false)
            .layout_tests(true)
            .derive_default(true)
            .generate()
            .unwrap_or_else(|error| {
                fail(&format!(
                    "bindgen failed on {FLOOR_HEADER}: {error}; bindgen needs libclang \
                     (run scripts/install-build-deps.sh)"
                ))
            });
        bindings
            .write_to_file(out.join("helix_floor_bindings.rs"))
            .unwrap_or_else(|error| fail(&format!("cannot write bindings: {error}")));
    }

    fn utf8(path: &Path) -> &str {
        path.to_str()
            .unwrap_or_else(|| fail(&format!("non-UTF-8 path {}", path.display())))
    }

    fn fail(message: &str) -> ! {
        panic!("helix-wal-cli io-uring build: {message}");
    }
}
