//! `ross plugin new NAME`: a new mode plugin crate that builds, passes its tests and is served
//! as it stands, for an author to change.

use std::path::{Path, PathBuf};

/// Why a plugin crate could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name cannot be a mode name.
    #[error(
        "{0:?} cannot be a mode name: use lower-case letters, digits, '_' or '-', starting \
         with a letter"
    )]
    BadName(String),
    /// The target folder exists and is not empty.
    #[error("{0} already exists and is not empty")]
    Exists(PathBuf),
    /// plugin-api was not found next to this executable.
    #[error(
        "cannot find ross's plugin-api next to this executable; pass --api PATH (the \
         plugin-api folder of a ross checkout)"
    )]
    NoApi,
    /// Writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// The `plugin-api` crate of the checkout this executable was built in
/// (`<checkout>/target/<profile>/ross`), if it is still there.
pub fn find_plugin_api() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .map(|dir| dir.join("plugin-api"))
        .find(|api| api.join("Cargo.toml").is_file())
        .and_then(|api| api.canonicalize().ok())
}

/// Creates the crate for mode `name` in `dir`, depending on the plugin-api at `api`. Returns
/// the files written.
pub fn new_plugin(name: &str, dir: &Path, api: &Path) -> Result<Vec<PathBuf>, ScaffoldError> {
    if !plugin_api::is_mode_name(name) {
        return Err(ScaffoldError::BadName(name.to_owned()));
    }
    let occupied = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
    if occupied {
        return Err(ScaffoldError::Exists(dir.to_owned()));
    }
    let api = api.canonicalize().map_err(|source| ScaffoldError::Io {
        path: api.to_owned(),
        source,
    })?;
    let lib = name.replace('-', "_");
    let type_name: String = name
        .split(['-', '_'])
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or(String::new(), |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect();
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{lib}}", &lib)
            .replace("{{Type}}", &type_name)
            .replace("{{api}}", &api.display().to_string())
    };
    let files = [
        ("Cargo.toml", fill(CARGO_TOML)),
        ("src/lib.rs", fill(LIB_RS)),
        ("README.md", fill(README_MD)),
        (".gitignore", "/target\n".to_owned()),
    ];
    let mut written = Vec::new();
    for (rel, text) in files {
        let path = dir.join(rel);
        let io = |source| ScaffoldError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(path.parent().unwrap_or(dir)).map_err(io)?;
        std::fs::write(&path, text).map_err(io)?;
        written.push(path);
    }
    Ok(written)
}

const CARGO_TOML: &str = r#"[package]
name = "{{name}}"
version = "0.1.0"
edition = "2021"

[lib]
# cdylib: the library ross loads; rlib: so this crate's own tests can call it.
crate-type = ["cdylib", "rlib"]

[dependencies]
ross-plugin-api = { path = "{{api}}" }   # imported as `plugin_api`
abi_stable = "0.11.3"                     # export_modes! refers to it by name

[dev-dependencies]
# The test helpers: load a real image and render it through this plugin in-process.
ross-plugin-api = { path = "{{api}}", features = ["testing"] }

# A crate of its own, even when created inside another workspace.
[workspace]

[profile.release]
# A panic in a mode must unwind so ross can turn it into one 500 (never "abort").
panic = "unwind"
"#;

const LIB_RS: &str = r#"//! The `{{name}}` mode: exactly the requested size like `crop` (scaled to cover the box and
//! centre-cropped), mirrored left to right. Change `render` to make it yours.

use plugin_api::{ops, ImageBuf, ImageView, Mode, ModeDescriptor, RenderError, TargetSize};

pub struct {{Type}};

impl Mode for {{Type}} {
    fn descriptor(&self) -> ModeDescriptor {
        ModeDescriptor {
            // The URL word: /300/300/{{name}}/photo.jpg
            name: "{{name}}",
            // Bump the version in Cargo.toml whenever the output changes: ross then purges
            // the cached renders of this mode.
            version: env!("CARGO_PKG_VERSION"),
            description: "Exactly WxH like crop, mirrored left to right.",
        }
    }

    /// `src` is upright, opaque RGB (ross decodes, orients and flattens it). Return pixels
    /// no larger than `target`; ross encodes and caches them.
    fn render(&self, src: ImageView<'_>, target: TargetSize) -> Result<ImageBuf, RenderError> {
        let mut out = ops::crop_to(src, target.width, target.height)?;
        let (width, stride) = (out.width as usize, out.stride as usize);
        let bpp = out.format.bytes_per_pixel();
        for row in out.pixels.chunks_mut(stride) {
            for x in 0..width / 2 {
                for c in 0..bpp {
                    row.swap(x * bpp + c, (width - 1 - x) * bpp + c);
                }
            }
        }
        Ok(out)
    }
}

// Exports the modes through the stable ABI. Several modes: export_modes!(A, B).
plugin_api::export_modes!({{Type}});

#[cfg(test)]
mod tests {
    use plugin_api::testing::{load_image, sample, Harness};

    use super::*;

    #[test]
    fn declares_its_mode() {
        let plugin = Harness::new(instantiate_root_module());
        assert_eq!(plugin.modes()[0].0, "{{name}}");
    }

    #[test]
    fn renders_a_photo_at_exactly_the_box() {
        // Called through the exported module, exactly as ross calls it.
        let plugin = Harness::new(instantiate_root_module());
        let out = plugin
            .render_file("{{name}}", &sample("ladybird.jpg"), 200, 300)
            .unwrap();
        assert_eq!((out.width, out.height), (200, 300));
    }

    #[test]
    fn the_left_edge_becomes_the_right_edge() {
        let plugin = Harness::new(instantiate_root_module());
        let photo = load_image(&sample("storm.jpg"));
        let plain = ops::crop_to(photo.view(), 120, 80).unwrap();
        let mirrored = plugin.render("{{name}}", &photo, 120, 80).unwrap();
        assert_eq!(&mirrored.view().row(40)[..3], &plain.view().row(40)[119 * 3..]);
    }
}
"#;

const README_MD: &str = r#"# {{name}}

A [ross](https://example.invalid/ross) mode plugin: `/{width}/{height}/{{name}}/{key}`.

```sh
cargo test                 # renders sample photos through the plugin, in-process
cargo build --release      # target/release/lib{{lib}}.so
ross plugin check target/release/lib{{lib}}.so   # what ross will say when it loads it
```

Publish into a running ross (hot reload picks it up within a second or two): copy to a
hidden name in the plugin folder, then rename, so ross never sees a half-written file.

```sh
cp target/release/lib{{lib}}.so PLUGINS/.lib{{lib}}.so.new
mv PLUGINS/.lib{{lib}}.so.new PLUGINS/lib{{lib}}.so
```

See ross's `docs/plugins.md` for the contract, the helpers and the versioning policy.
"#;
