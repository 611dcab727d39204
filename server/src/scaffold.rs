//! `ross plugin new NAME`: a new mode plugin crate that builds, passes its tests and is served
//! as it stands, for an author to change.

use std::path::{Component, Path, PathBuf};

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
    /// A mode name that cannot name a Rust crate.
    #[error(
        "{0:?} is a Rust keyword or a built-in crate's name, which cannot name the plugin's \
         crate: pick another name"
    )]
    Reserved(String),
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

/// Names cargo refuses for a package (Rust keywords, and the built-in crates), with `-` as
/// `_`.
const RESERVED: &[&str] = &[
    "abstract",
    "alloc",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "core",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "proc_macro",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "std",
    "struct",
    "super",
    "test",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
];

/// Where a new plugin's ross crates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sdk {
    /// A registry, by version requirement (the versions this ross was built with).
    Registry,
    /// A folder holding `plugin-api/` and `plugin-kit/` (a ross source tree), as given on the
    /// command line: a relative path is taken from the current folder.
    Path(PathBuf),
}

/// The ABI crate: its package, its folder in an SDK, and the version this ross was built with.
const API: (&str, &str, &str) = ("ross-plugin-api", "plugin-api", plugin_api::PACKAGE_VERSION);
/// The kit, likewise.
const KIT: (&str, &str, &str) = ("ross-plugin-kit", "plugin-kit", plugin_kit::PACKAGE_VERSION);

/// The requirement for the ABI crate of `version`: exactly it. Every version of that package
/// carries one ABI (its patch goes up with each), and the author moves to another on purpose.
fn api_requirement(version: &str) -> String {
    format!("={version}")
}

/// The requirement for the kit of `version`: `major.minor`, any later compatible version.
fn kit_requirement(version: &str) -> String {
    version.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// Where each of the two crates comes from: its version requirement, and with an SDK its
/// `path` as seen from `dir`, the new crate's folder (TOML `key = value` items).
fn sources(sdk: &Sdk, dir: &Path) -> Result<[Vec<String>; 2], ScaffoldError> {
    let versions = |api: &str, kit: &str| [api_requirement(api), kit_requirement(kit)];
    match sdk {
        Sdk::Registry => Ok(versions(API.2, KIT.2).map(|v| vec![item("version", &v)])),
        Sdk::Path(root) => {
            let (api, kit) = check_sdk(root)?;
            let from = resolved(dir).map_err(|source| ScaffoldError::Io {
                path: dir.to_owned(),
                source,
            })?;
            let mut paths = [API.1, KIT.1].into_iter().map(|sub| {
                let path = root.join(sub);
                let written = if path.is_absolute() {
                    path
                } else {
                    // Both exist up to `root`: resolved, links and `..` alike.
                    relative(&resolved(&path).unwrap_or(path), &from)
                };
                item("path", &written.display().to_string())
            });
            let [api, kit] = versions(&api, &kit);
            Ok([
                vec![item("version", &api), paths.next().unwrap_or_default()],
                vec![item("version", &kit), paths.next().unwrap_or_default()],
            ])
        }
    }
}

/// `key = "value"`, the value a TOML string.
fn item(key: &str, value: &str) -> String {
    format!("{key} = {}", toml::Value::String(value.to_owned()))
}

/// The dependency line of `package` from `items`: `name = "0.1"` when that is all.
fn dependency(package: &str, items: &[String]) -> String {
    match items {
        [version] => format!("{package} = {}", version.trim_start_matches("version = ")),
        _ => format!("{package} = {{ {} }}", items.join(", ")),
    }
}

/// `path` made absolute and resolved, one component at a time: links followed while the
/// folders exist (`canonicalize`), `.` and `..` taken lexically past that (a folder still to
/// be created holds no link).
fn resolved(path: &Path) -> std::io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for part in std::env::current_dir()?.join(path).components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => {
                out.push(other);
                if let Ok(real) = out.canonicalize() {
                    out = real;
                }
            }
        }
    }
    Ok(out)
}

/// `to` as seen from `from`, both absolute and resolved.
fn relative(to: &Path, from: &Path) -> PathBuf {
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

/// Checks that `root` holds ross's two plugin crates, the ABI crate of an ABI this ross
/// takes; returns their versions (ABI crate, kit).
fn check_sdk(root: &Path) -> Result<(String, String), ScaffoldError> {
    let refuse = |reason: String| ScaffoldError::NotAnSdk {
        path: root.to_owned(),
        reason,
    };
    let manifest = |sub: &str, package: &str| -> Result<toml::Table, ScaffoldError> {
        let path = format!("{sub}/Cargo.toml");
        let text = std::fs::read_to_string(root.join(&path))
            .map_err(|e| refuse(format!("{path}: {e}")))?;
        let table: toml::Table = text.parse().map_err(|e| refuse(format!("{path}: {e}")))?;
        let name = table.get("package").and_then(|p| p.get("name"));
        if name.and_then(toml::Value::as_str) != Some(package) {
            return Err(refuse(format!("{path} is not the package {package}")));
        }
        Ok(table)
    };
    let field = |table: &toml::Table, keys: &[&str]| {
        let mut value = table.get("package");
        for key in keys {
            value = value.and_then(|v| v.get(key));
        }
        value.and_then(toml::Value::as_str).unwrap_or("").to_owned()
    };
    let api = manifest(API.1, API.0)?;
    let abi = field(&api, &["metadata", "ross", "abi"]);
    if !plugin_api::host::takes_abi(&abi) {
        return Err(refuse(format!(
            "its {} carries plugin ABI {:?}, which this ross does not take (its own is {})",
            API.0,
            abi,
            plugin_api::PLUGIN_ABI_VERSION
        )));
    }
    let kit = manifest(KIT.1, KIT.0)?;
    Ok((field(&api, &["version"]), field(&kit, &["version"])))
}

/// Creates the crate for mode `name` in `dir`, its ross crates from `sdk`. Returns the files
/// written.
pub fn new_plugin(name: &str, dir: &Path, sdk: &Sdk) -> Result<Vec<PathBuf>, ScaffoldError> {
    if !plugin_api::is_mode_name(name) {
        return Err(ScaffoldError::BadName(name.to_owned()));
    }
    if RESERVED.contains(&name.replace('-', "_").as_str()) {
        return Err(ScaffoldError::Reserved(name.to_owned()));
    }
    let occupied = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
    if occupied {
        return Err(ScaffoldError::Exists(dir.to_owned()));
    }
    let [api, kit] = sources(sdk, dir)?;
    let kit_testing = [kit.clone(), vec![r#"features = ["testing"]"#.to_owned()]].concat();
    let (api, kit_testing, kit) = (
        dependency(API.0, &api),
        dependency(KIT.0, &kit_testing),
        dependency(KIT.0, &kit),
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
        .chain(["Mode".to_owned()])
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
# The plugin boundary, imported as `plugin_api`. Each version of it carries one plugin ABI
# (the one ross checks), hence the exact version: move to another on purpose.
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
        assert!(plugin_api::PACKAGE_VERSION.starts_with("0.1."));
        let api = format!("={}", plugin_api::PACKAGE_VERSION);
        let kit = kit_requirement(plugin_kit::PACKAGE_VERSION);
        assert_eq!(
            toml["dependencies"]["ross-plugin-api"].as_str(),
            Some(api.as_str())
        );
        assert_eq!(
            toml["dependencies"]["ross-plugin-kit"].as_str(),
            Some(kit.as_str())
        );
        let testing = &toml["dev-dependencies"]["ross-plugin-kit"];
        assert_eq!(testing["features"][0].as_str(), Some("testing"));
        assert_eq!(testing["version"].as_str(), Some(kit.as_str()));
        let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains("pub struct MirrorMode;"), "{lib}");
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
        let exact = format!("={}", plugin_api::PACKAGE_VERSION);
        assert_eq!(api["version"].as_str(), Some(exact.as_str()));
        let kit = &toml["dev-dependencies"]["ross-plugin-kit"];
        assert_eq!(
            kit["path"].as_str(),
            Some(sdk.join("plugin-kit").to_str().unwrap())
        );
        // Relative: the same folder seen from the new crate, through links.
        let real = work.path().join("real");
        std::fs::create_dir_all(real.join("deep")).unwrap();
        std::os::unix::fs::symlink(real.join("deep"), work.path().join("link")).unwrap();
        let from = resolved(&work.path().join("link/plugins/mirror")).unwrap();
        assert_eq!(
            from,
            real.canonicalize().unwrap().join("deep/plugins/mirror")
        );
        let to = resolved(&work.path().join("real/ross/../sdk/plugin-api")).unwrap();
        assert_eq!(relative(&to, &from), Path::new("../../../sdk/plugin-api"));
        assert_eq!(
            relative(Path::new("/a/b/c"), Path::new("/a/x")),
            Path::new("../b/c")
        );
    }

    #[test]
    fn names_cargo_refuses_are_refused_and_type_names_never_clash() {
        let work = tempfile::tempdir().unwrap();
        for name in ["self", "fn", "test", "std", "proc-macro"] {
            let e = new_plugin(name, &work.path().join(name), &Sdk::Registry).unwrap_err();
            assert!(matches!(e, ScaffoldError::Reserved(_)), "{name}: {e}");
        }
        // `mode`, `ok` and `result` would clash with names the template uses, unsuffixed.
        for (name, type_name) in [("mode", "ModeMode"), ("ok", "OkMode"), ("a-b_c", "ABCMode")] {
            let dir = work.path().join(name);
            new_plugin(name, &dir, &Sdk::Registry).unwrap();
            let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
            assert!(lib.contains(&format!("pub struct {type_name};")), "{name}");
        }
    }

    #[test]
    fn a_folder_without_the_crates_is_not_an_sdk() {
        let work = tempfile::tempdir().unwrap();
        let sdk = Sdk::Path(work.path().into());
        let e = new_plugin("mirror", &work.path().join("m"), &sdk).unwrap_err();
        assert!(matches!(e, ScaffoldError::NotAnSdk { .. }), "{e}");
        assert!(e.to_string().contains("plugin-api/Cargo.toml"), "{e}");
        assert!(!work.path().join("m").exists(), "nothing written");
        let write = |text: &str| {
            std::fs::create_dir_all(work.path().join("plugin-api")).unwrap();
            std::fs::write(work.path().join("plugin-api/Cargo.toml"), text).unwrap();
            new_plugin("mirror", &work.path().join("m"), &sdk)
                .unwrap_err()
                .to_string()
        };
        // Another package in the right place.
        let e = write("[package]\nname = \"other\"\nversion = \"0.1.0\"\n");
        assert!(e.contains("not the package ross-plugin-api"), "{e}");
        // The ABI crate of a line this ross does not take.
        let e = write(
            "[package]\nname = \"ross-plugin-api\"\nversion = \"0.1.9\"\n\
             [package.metadata.ross]\nabi = \"0.3.0\"\n",
        );
        assert!(e.contains("carries plugin ABI \"0.3.0\""), "{e}");
    }
}
