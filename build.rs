//! Build script. The portable crate needs no C toolchain: everything here runs only with the
//! `io-uring` feature on Linux, which compiles the C shim in csrc/ against the pinned liburing
//! and generates bindings for the shim's own header. Writes only into OUT_DIR.
//!
//! The package declares `links = "helix_uring"`: the shim's header directory is exported to the
//! build scripts of direct dependents as DEP_HELIX_URING_INCLUDE, so that C code linked against
//! the shim (the CLI's benchmark loops) compiles against the same header, and the shim itself is
//! compiled once, here.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let feature_on = std::env::var_os("CARGO_FEATURE_IO_URING").is_some();
    let linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    if feature_on && linux {
        #[cfg(feature = "io-uring")]
        uring::build();
    }
}

#[cfg(feature = "io-uring")]
mod uring {
    use std::env;
    use std::fs;
    use std::path::{Path, PathBuf};

    /// Set (e.g. to `address`) to compile the shim with that sanitizer.
    const SANITIZE_VARIABLE: &str = "HELIX_SANITIZE";
    /// The C define that compiles the shim's test hooks, given to the compiler and to bindgen
    /// alike (so both see the same header) only with the test-only `test-support` feature.
    const TEST_HOOKS_DEFINE: &str = "HELIX_TEST_HOOKS";
    /// The file that records the pinned liburing version.
    const PIN_FILE: &str = "vendor/liburing.toml";
    /// The shim's directory, source and header (the only input of bindgen).
    const SHIM_DIR: &str = "csrc";
    const SHIM_SOURCE: &str = "csrc/helix_uring.c";
    const SHIM_HEADER: &str = "csrc/helix_uring.h";

    pub fn build() {
        println!("cargo:rerun-if-changed={SHIM_DIR}");
        println!("cargo:rerun-if-changed={PIN_FILE}");
        let include = liburing_include();
        check_liburing_version(&include);
        compile_shim(&include);
        generate_bindings();
        export_include();
    }

    /// True with the `test-support` feature: the shim's test hooks are compiled in.
    fn test_hooks() -> bool {
        env::var_os("CARGO_FEATURE_TEST_SUPPORT").is_some()
    }

    /// The configured liburing header directory exported by uring-sys2 (`links = "uring"`).
    fn liburing_include() -> PathBuf {
        match env::var_os("DEP_URING_INCLUDE") {
            Some(path) => PathBuf::from(path),
            None => fail(
                "DEP_URING_INCLUDE is not set: the uring-sys2 dependency did not export \
                 liburing's header directory (is the uring-sys2 pin in Cargo.toml intact?)",
            ),
        }
    }

    /// Fails the build unless the header's version macros match the pin in vendor/.
    fn check_liburing_version(include: &Path) {
        let pinned = pinned_version();
        let header_path = include.join("liburing/io_uring_version.h");
        let header = fs::read_to_string(&header_path).unwrap_or_else(|error| {
            fail(&format!("cannot read {}: {error}", header_path.display()))
        });
        let major = define_value(&header, "IO_URING_VERSION_MAJOR");
        let minor = define_value(&header, "IO_URING_VERSION_MINOR");
        let found = format!("{}.{}", major.unwrap_or("?"), minor.unwrap_or("?"));
        if found != pinned {
            fail(&format!(
                "liburing version mismatch: {PIN_FILE} pins {pinned} but the uring-sys2 \
                 dependency provides {found}; update the pin and the uring-sys2 version together"
            ));
        }
    }

    /// The `version = "X.Y"` line of the pin file.
    fn pinned_version() -> String {
        let text = fs::read_to_string(PIN_FILE)
            .unwrap_or_else(|error| fail(&format!("cannot read {PIN_FILE}: {error}")));
        text.lines()
            .filter_map(|line| line.trim().strip_prefix("version"))
            .filter_map(|rest| rest.trim_start().strip_prefix('='))
            .map(|value| value.trim().trim_matches('"').to_string())
            .next()
            .unwrap_or_else(|| fail(&format!("{PIN_FILE} has no `version = \"X.Y\"` line")))
    }

    /// The value of `#define NAME VALUE` in a header.
    fn define_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
        header.lines().find_map(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("#define"), Some(found), Some(value)) if found == name => Some(value),
                _ => None,
            }
        })
    }

    /// Compiles the shim with warnings as errors. liburing's header is a system include so that
    /// its own code is not held to our warning flags.
    fn compile_shim(include: &Path) {
        println!("cargo:rerun-if-env-changed={SANITIZE_VARIABLE}");
        let mut build = cc::Build::new();
        // scripts/sanitize.sh instruments the shim together with the Rust code.
        if let Some(sanitizer) = env::var_os(SANITIZE_VARIABLE) {
            let sanitizer = sanitizer.to_string_lossy().into_owned();
            build
                .flag(format!("-fsanitize={sanitizer}"))
                .flag("-fno-omit-frame-pointer");
        }
        if test_hooks() {
            build.define(TEST_HOOKS_DEFINE, None);
        }
        build
            .file(SHIM_SOURCE)
            .include(SHIM_DIR)
            .flag("-isystem")
            .flag(
                include
                    .to_str()
                    .unwrap_or_else(|| fail("non-UTF-8 include path")),
            )
            .flag("-std=gnu11")
            .flag("-Wall")
            .flag("-Wextra")
            .flag("-Werror")
            .warnings(false)
            .compile("helix_uring");
    }

    /// Bindings for our own header only, restricted to the shim's names.
    fn generate_bindings() {
        let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_else(|| fail("OUT_DIR unset")));
        let bindings = bindgen::Builder::default()
            .header(SHIM_HEADER)
            .clang_args(test_hooks().then(|| format!("-D{TEST_HOOKS_DEFINE}")))
            .allowlist_function("helix_.*")
            .allowlist_type("helix_.*")
            .allowlist_var("HELIX_.*")
            .default_enum_style(bindgen::EnumVariation::Consts)
            .prepend_enum_name(false)
            .layout_tests(true)
            .derive_default(true)
            .generate()
            .unwrap_or_else(|error| {
                fail(&format!(
                    "bindgen failed on {SHIM_HEADER}: {error}; bindgen needs libclang \
                     (run scripts/install-build-deps.sh)"
                ))
            });
        bindings
            .write_to_file(out.join("helix_uring_bindings.rs"))
            .unwrap_or_else(|error| fail(&format!("cannot write bindings: {error}")));
    }

    /// Tells direct dependents where the shim's header is (DEP_HELIX_URING_INCLUDE, an absolute
    /// path: their build scripts run in their own directories).
    fn export_include() {
        let manifest_dir =
            env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| fail("CARGO_MANIFEST_DIR unset"));
        let include = Path::new(&manifest_dir).join(SHIM_DIR);
        let include = include
            .to_str()
            .unwrap_or_else(|| fail("non-UTF-8 path of the shim's directory"));
        println!("cargo:include={include}");
    }

    fn fail(message: &str) -> ! {
        panic!("helix-wal io-uring build: {message}");
    }
}
