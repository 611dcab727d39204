//! The memory cost of hot reloads. abi_stable never unloads a library, so every reload maps
//! one more copy of the plugin for the life of the process. This replaces the `crop` plugin
//! 100 times through the same registry the server uses (publish by rename, load, render one
//! image with the new version) and reports resident and mapped memory before and after.
//!
//! `cargo bench -p ross --bench reload` after `cargo build --release --workspace`.

use std::path::Path;
use std::time::Instant;

use plugin_api::{ImageBuf, PixelFormat, TargetSize};
use ross::plugins::{libraries_mapped, ModeRegistry};

const RELOADS: usize = 100;

/// Memory figures of this process, in KiB.
#[derive(Debug, Clone, Copy)]
struct Memory {
    /// Resident set (`VmRSS`).
    rss: u64,
    /// Address space (`VmSize`).
    virtual_size: u64,
    /// Mapped bytes of plugin copies (from `/proc/self/maps`).
    plugin_maps: u64,
    /// Mappings of plugin copies.
    plugin_map_count: usize,
}

fn memory() -> Memory {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mut plugin_maps = 0;
    let mut plugin_map_count = 0;
    for line in maps.lines().filter(|l| l.contains("loaded-plugins")) {
        let range = line.split_whitespace().next().unwrap();
        let (start, end) = range.split_once('-').unwrap();
        let (start, end) = (
            u64::from_str_radix(start, 16).unwrap(),
            u64::from_str_radix(end, 16).unwrap(),
        );
        plugin_maps += (end - start) / 1024;
        plugin_map_count += 1;
    }
    Memory {
        rss: field("VmRSS:"),
        virtual_size: field("VmSize:"),
        plugin_maps,
        plugin_map_count,
    }
}

fn render_once(registry: &ModeRegistry) {
    let src = ImageBuf::filled(640, 480, PixelFormat::Rgb8, &[120, 80, 40]);
    let target = TargetSize {
        width: 300,
        height: 300,
    };
    let mode = registry.get("crop").expect("crop is loaded");
    mode.render(src.view(), target).expect("crop renders");
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let built = root.join("target/release/libcrop.so");
    assert!(
        built.exists(),
        "{} is missing: run cargo build --release --workspace first",
        built.display()
    );
    let work = tempfile::tempdir().unwrap();
    let plugins = work.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let installed = plugins.join("libcrop.so");
    let publish = || {
        let tmp = plugins.join(".libcrop.so.new");
        std::fs::copy(&built, &tmp).unwrap();
        std::fs::rename(&tmp, &installed).unwrap();
    };
    let registry = ModeRegistry::new(&work.path().join("data/loaded-plugins"));
    publish();
    registry.load_file(&installed).unwrap();
    render_once(&registry);
    let before = memory();
    let started = Instant::now();
    for _ in 0..RELOADS {
        publish();
        registry.load_file(&installed).unwrap();
        render_once(&registry);
    }
    let took = started.elapsed();
    let after = memory();
    let file_kib = std::fs::metadata(&built).unwrap().len() / 1024;
    let per = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / RELOADS as f64;
    println!("ross reload cost: libcrop.so ({file_kib} KiB on disk), {RELOADS} reloads, each followed by one render");
    println!(
        "{:<34} {:>12} {:>12} {:>14}",
        "", "before", "after", "per reload"
    );
    println!(
        "{:<34} {:>9} KiB {:>9} KiB {:>10.0} KiB",
        "resident (VmRSS)",
        before.rss,
        after.rss,
        per(after.rss, before.rss)
    );
    println!(
        "{:<34} {:>9} KiB {:>9} KiB {:>10.0} KiB",
        "address space (VmSize)",
        before.virtual_size,
        after.virtual_size,
        per(after.virtual_size, before.virtual_size)
    );
    println!(
        "{:<34} {:>9} KiB {:>9} KiB {:>10.0} KiB",
        "plugin copies mapped",
        before.plugin_maps,
        after.plugin_maps,
        per(after.plugin_maps, before.plugin_maps)
    );
    println!(
        "{:<34} {:>12} {:>12}",
        "plugin copy mappings", before.plugin_map_count, after.plugin_map_count
    );
    println!(
        "{:<34} {:>12} {:>12}",
        "libraries mapped (metric)",
        1,
        libraries_mapped()
    );
    println!(
        "reload time: {:.1} ms each (copy, checks, test render, swap)",
        took.as_secs_f64() * 1000.0 / RELOADS as f64
    );
}
