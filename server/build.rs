//! Compiles the AVIF shim (`native/avif.c`) against the system's libavif, found with
//! pkg-config (Debian: `libavif-dev`, installed by `scripts/deps.sh`).

fn main() {
    println!("cargo:rerun-if-changed=native/avif.c");
    let avif = pkg_config::Config::new()
        .atleast_version("0.11")
        .cargo_metadata(false)
        .probe("libavif")
        .unwrap_or_else(|e| {
            panic!("libavif not found ({e}); on Debian: apt-get install libavif-dev (scripts/deps.sh does)")
        });
    let mut build = cc::Build::new();
    build
        .file("native/avif.c")
        .warnings(true)
        .extra_warnings(true);
    for dir in &avif.include_paths {
        build.include(dir);
    }
    build.compile("ross_avif");
    // After the shim, which needs it.
    for dir in &avif.link_paths {
        println!("cargo:rustc-link-search=native={}", dir.display());
    }
    for lib in &avif.libs {
        println!("cargo:rustc-link-lib={lib}");
    }
}
