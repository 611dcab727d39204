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
    /// `--path` is not a folder holding ross's plugin crates.
    #[error(
        "{path}: not a ross plugin SDK ({reason}); give the folder that holds plugin-api/ and \
         plugin-kit/ (a ross source tree)"
    )]
    NotAnSdk {
        /// The folder given.
        path: PathBuf,
        /// What is missing or wrong in it.
        reason: String,
    },
    /// Writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// Where a new plugin's ross crates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sdk {
    /// A registry, by version requirement (the versions this ross was built with).
    Registry,
    /// A folder holding `plugin-api/` and `plugin-kit/` (a ross source tree), as given on the
    /// command line: a relative path is taken from the current folder.
    Path(PathBuf),
}

/// The two crates a plugin depends on, with the requirement this ross was built with
/// (`major.minor`: any later patch, and any later minor from 1.0 on).
const CRATES: [(&str, &str, &str); 2] = [
    ("ross-plugin-api", "plugin-api", plugin_api::PACKAGE_VERSION),
    ("ross-plugin-kit", "plugin-kit", plugin_kit::PACKAGE_VERSION),
];

fn requirement(version: &str) -> String {
    version.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// Where each of the two crates comes from: its version requirement, and with an SDK its
/// `path` as seen from `dir`, the new crate's folder (TOML `key = value` items).
fn sources(sdk: &Sdk, dir: &Path) -> Result<[Vec<String>; 2], ScaffoldError> {
    let folder = match sdk {
        Sdk::Registry => None,
        Sdk::Path(path) => Some(check_sdk(path)?),
    };
    Ok(CRATES.map(|(_, sub, version)| {
        let mut items = vec![format!("version = {}", toml_string(&requirement(version)))];
        if let Some(root) = folder {
            let path = relative_to(&root.join(sub), dir);
            items.push(format!(
                "path = {}",
                toml_string(&path.display().to_string())
            ));
        }
        items
    }))
}

/// The dependency line of `package` from `items`: `name = "0.1"` when that is all.
fn dependency(package: &str, items: &[String]) -> String {
    match items {
        [version] => format!("{package} = {}", version.trim_start_matches("version = ")),
        _ => format!("{package} = {{ {} }}", items.join(", ")),
    }
}

/// `path`, or when it is relative, the same folder seen from `dir` (both relative to the
/// current folder): so a crate and its SDK can move together.
fn relative_to(path: &Path, dir: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_owned();
    }
    let absolute = |p: &Path| {
        let p = std::env::current_dir().unwrap_or_default().join(p);
        p.components().fold(PathBuf::new(), |mut acc, c| {
            match c {
                std::path::Component::CurDir => {}
                std::path::Component::ParentDir => {
                    acc.pop();
                }
                other => acc.push(other),
            }
            acc
        })
    };
    let (to, from) = (absolute(path), absolute(dir));
    let common = to
        .components()
        .zip(from.components())
        .take_while(|(a, b)| a == b)
        .count();
    let ups = from.components().count() - common;
    let mut rel: PathBuf = std::iter::repeat_n("..", ups).collect();
    rel.extend(to.components().skip(common));
    rel
}

/// A TOML basic string of `s`.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Checks that `path` holds ross's two plugin crates, of the versions this ross takes.
fn check_sdk(path: &Path) -> Result<&Path, ScaffoldError> {
    let refuse = |reason: String| ScaffoldError::NotAnSdk {
        path: path.to_owned(),
        reason,
    };
    for (package, sub, version) in CRATES {
        let manifest = path.join(sub).join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest)
            .map_err(|e| refuse(format!("{sub}/Cargo.toml: {e}")))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| refuse(format!("{sub}/Cargo.toml: {e}")))?;
        let field = |key: &str| {
            table
                .get("package")
                .and_then(|p| p.get(key))
                .and_then(toml::Value::as_str)
                .map(str::to_owned)
        };
        if field("name").as_deref() != Some(package) {
            return Err(refuse(format!(
                "{sub}/Cargo.toml is not the package {package}"
            )));
        }
        let found = field("version").unwrap_or_default();
        if requirement(&found) != requirement(version) {
            return Err(refuse(format!(
                "{sub} is {package} {found}, and this ross takes {}",
                requirement(version)
            )));
        }
    }
    Ok(path)
}

/// Creates the crate for mode `name` in `dir`, its ross crates from `sdk`. Returns the files
/// written.
pub fn new_plugin(name: &str, dir: &Path, sdk: &Sdk) -> Result<Vec<PathBuf>, ScaffoldError> {
    if !plugin_api::is_mode_name(name) {
        return Err(ScaffoldError::BadName(name.to_owned()));
    }
    let occupied = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
    if occupied {
        return Err(ScaffoldError::Exists(dir.to_owned()));
    }
    let [api, kit] = sources(sdk, dir)?;
    let kit_testing = [kit.clone(), vec![r#"features = ["testing"]"#.to_owned()]].concat();
    let (api, kit_testing, kit) = (
        dependency(CRATES[0].0, &api),
        dependency(CRATES[1].0, &kit_testing),
        dependency(CRATES[1].0, &kit),
    );
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
            .replace("{{api}}", &api)
            .replace("{{kit}}", &kit)
            .replace("{{kit_testing}}", &kit_testing)
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
# The plugin boundary, imported as `plugin_api`: frozen on 0.1.x (ross checks the plugin
# ABI version it carries, not this one).
{{api}}
# Pixel operations, geometry and the test kit, imported as `plugin_kit`.
{{kit}}
# export_modes! refers to it by name.
abi_stable = "0.11.3"

[dev-dependencies]
# The test helpers: load a real image and render it through this plugin in-process.
{{kit_testing}}

# Where your registry does not have ross's crates, take them from a ross source tree:
# [patch.crates-io]
# ross-plugin-api = { path = "ROSS/plugin-api" }
# ross-plugin-kit = { path = "ROSS/plugin-kit" }
# (or create the crate with `ross plugin new NAME --path ROSS`).

# A crate of its own, even when created inside another workspace.
[workspace]

[profile.release]
# A panic in a mode must unwind so ross can turn it into one 500 (never "abort").
panic = "unwind"
"#;

const LIB_RS: &str = r#"//! The `{{name}}` mode: exactly the requested size like `crop` (scaled to cover the box and
//! centre-cropped), mirrored left to right. Change `render` to make it yours.

use plugin_api::{ImageBuf, ImageView, Mode, ModeDescriptor, RenderError, TargetSize};
use plugin_kit::ops;

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
    use plugin_kit::testing::{load_image, sample, Harness};

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

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(dir: &Path) -> toml::Table {
        std::fs::read_to_string(dir.join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap()
    }

    /// The workspace this test runs in: a ross source tree, so an SDK.
    fn checkout() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn by_default_the_crates_are_asked_for_by_version_only() {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("mirror");
        new_plugin("mirror", &dir, &Sdk::Registry).unwrap();
        let toml = manifest(&dir);
        for table in ["dependencies", "dev-dependencies"] {
            for (name, spec) in toml[table].as_table().unwrap() {
                assert!(spec.get("path").is_none(), "{table}.{name} has a path");
            }
        }
        let api = requirement(plugin_api::PACKAGE_VERSION);
        assert_eq!(api, "0.1", "the ABI crate stays on 0.1.x");
        assert_eq!(
            toml["dependencies"]["ross-plugin-api"].as_str(),
            Some("0.1")
        );
        assert_eq!(
            toml["dependencies"]["ross-plugin-kit"].as_str(),
            Some(requirement(plugin_kit::PACKAGE_VERSION).as_str())
        );
        let testing = &toml["dev-dependencies"]["ross-plugin-kit"];
        assert_eq!(testing["features"][0].as_str(), Some("testing"));
        assert_eq!(
            testing["version"].as_str(),
            Some(requirement(plugin_kit::PACKAGE_VERSION).as_str())
        );
    }

    #[test]
    fn an_sdk_path_is_written_as_seen_from_the_new_crate() {
        let work = tempfile::tempdir().unwrap();
        // Absolute: kept as typed.
        let sdk = checkout().canonicalize().unwrap();
        let dir = work.path().join("a");
        new_plugin("mirror", &dir, &Sdk::Path(sdk.clone())).unwrap();
        let toml = manifest(&dir);
        let api = &toml["dependencies"]["ross-plugin-api"];
        assert_eq!(
            api["path"].as_str(),
            Some(sdk.join("plugin-api").to_str().unwrap())
        );
        assert_eq!(api["version"].as_str(), Some("0.1"));
        let kit = &toml["dev-dependencies"]["ross-plugin-kit"];
        assert_eq!(
            kit["path"].as_str(),
            Some(sdk.join("plugin-kit").to_str().unwrap())
        );
        // Relative (to the current folder): rebased on the new crate's folder.
        assert_eq!(
            relative_to(Path::new("../ross/plugin-api"), Path::new("plugins/mirror")),
            Path::new("../../../ross/plugin-api")
        );
        assert_eq!(
            relative_to(Path::new("ross/plugin-kit"), Path::new("./ross/plugins/x")),
            Path::new("../../plugin-kit")
        );
        assert_eq!(
            relative_to(Path::new("/opt/ross/plugin-api"), Path::new("x")),
            Path::new("/opt/ross/plugin-api")
        );
    }

    #[test]
    fn a_folder_without_the_crates_is_not_an_sdk() {
        let work = tempfile::tempdir().unwrap();
        let e = new_plugin(
            "mirror",
            &work.path().join("m"),
            &Sdk::Path(work.path().into()),
        )
        .unwrap_err();
        assert!(matches!(e, ScaffoldError::NotAnSdk { .. }), "{e}");
        assert!(e.to_string().contains("plugin-api/Cargo.toml"), "{e}");
        assert!(!work.path().join("m").exists(), "nothing written");
        // Another package in the right place.
        std::fs::create_dir_all(work.path().join("plugin-api")).unwrap();
        std::fs::write(
            work.path().join("plugin-api/Cargo.toml"),
            "[package]\nname = \"other\"\nversion = \"0.1.0\"\n",
        )
        .unwrap();
        let e = new_plugin(
            "mirror",
            &work.path().join("m"),
            &Sdk::Path(work.path().into()),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("not the package ross-plugin-api"),
            "{e}"
        );
    }
}
