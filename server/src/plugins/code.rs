//! A mode's code, loaded into this process: what a render worker calls (and the benchmarks,
//! which measure the render path in-process). The server process itself never holds one: it
//! knows modes by their [`super::LoadedMode`] description and sends work to workers.

use std::path::{Path, PathBuf};

use plugin_api::{ImageBuf, ImageView, TargetSize};

use super::loader::{self, PluginLoadError};
use super::registry::PluginRenderError;
use crate::imaging::DecodeBox;
use crate::worker::protocol::ModeSpec;
use plugin_api::host::Plugin;

/// One mode of a plugin library opened in this process.
pub struct ModeCode {
    /// URL name.
    pub name: String,
    /// What the plugin says of it.
    pub spec: ModeSpec,
    /// The plugin file, for messages.
    file: PathBuf,
    module: Plugin,
}

impl std::fmt::Debug for ModeCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ModeCode({} {})", self.name, self.spec.version)
    }
}

impl ModeCode {
    /// Opens the plugin copy `copy` (of the file `file`, named in errors) and checks it; its
    /// modes are then to be checked with [`ModeCode::test`]. Libraries are never unloaded:
    /// each call maps one more.
    pub fn open(copy: &Path, file: &Path) -> Result<Vec<ModeCode>, PluginLoadError> {
        let lib = loader::open(copy, file)?;
        Ok(lib
            .modes
            .iter()
            .map(|info| {
                let name = info.name.to_string();
                ModeCode {
                    file: file.to_owned(),
                    spec: ModeSpec {
                        name: name.clone(),
                        version: info.version.to_string(),
                        description: info.description.to_string(),
                        abi_version: lib.module.abi_version().to_owned(),
                        takes_alpha: lib.module.takes_alpha(&name),
                        fits_within: lib.module.fits_within(&name),
                    },
                    name,
                    module: lib.module,
                }
            })
            .collect())
    }

    /// A small render, as ross will make, before the mode is put in service: a plugin that
    /// cannot render at all is refused while the old version still serves.
    pub fn test(&self) -> Result<(), PluginLoadError> {
        loader::test_render(self.module, &self.name).map_err(|reason| {
            PluginLoadError::InvalidMode {
                file: self.file.clone(),
                reason: format!("mode {:?} failed its test render: {reason}", self.name),
            }
        })
    }

    /// Every mode of every plugin in `dir`, opened and tested in this process (benchmarks;
    /// plugin files are opened in place, so they must not be rebuilt meanwhile).
    pub fn load_dir(dir: &Path) -> Result<Vec<ModeCode>, PluginLoadError> {
        let mut modes = Vec::new();
        let files = super::plugin_files(dir).map_err(|e| PluginLoadError::Copy {
            file: dir.to_owned(),
            reason: e.to_string(),
        })?;
        for file in files {
            for mode in ModeCode::open(&file, &file)? {
                mode.test()?;
                modes.push(mode);
            }
        }
        Ok(modes)
    }

    /// The box the decoded source is shown in by a render at `target` (never smaller than
    /// `target`): fitted within it for a mode that says so (ABI 0.2.1), else covering it; or
    /// `None` for the full size. Plugins built before ABI 0.1.1 do not say: covering `target`.
    pub fn decode_box(&self, target: TargetSize) -> Option<DecodeBox> {
        let Some(need) = self.module.decode_need(&self.name, target) else {
            return Some(DecodeBox::cover(target.width, target.height));
        };
        let (width, height) = (need.width.max(target.width), need.height.max(target.height));
        (!need.full_size).then_some(DecodeBox {
            width,
            height,
            fit: self.spec.fits_within,
        })
    }

    /// Whether this mode takes RGBA sources and keeps their transparency (plugins built
    /// before ABI 0.1.2 do not: they are handed RGB).
    pub fn takes_alpha(&self) -> bool {
        self.spec.takes_alpha
    }

    /// Renders `source` at `target`. The output is checked: a valid buffer no larger than the
    /// target box.
    pub fn render(
        &self,
        source: ImageView<'_>,
        target: TargetSize,
    ) -> Result<ImageBuf, PluginRenderError> {
        let out = self
            .module
            .render(&self.name, source, target)
            .map_err(|error| PluginRenderError::Failed {
                mode: self.name.clone(),
                error,
            })?;
        let bad = |reason: String| PluginRenderError::BadOutput {
            mode: self.name.clone(),
            reason,
        };
        out.check_output(target)
            .map_err(|e| bad(e.message.to_string()))?;
        Ok(out)
    }
}
