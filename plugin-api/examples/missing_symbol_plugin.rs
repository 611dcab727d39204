//! Test fixture: a plugin that links against a function no library provides. The dynamic
//! linker cannot resolve it, so the loader's `RTLD_NOW` pre-flight must refuse the file with
//! the linker's message before abi_stable runs any of its code.
#![allow(unsafe_code)]

use plugin_api::{ImageBuf, ImageView, Mode, ModeDescriptor, RenderError, TargetSize};

extern "C" {
    fn ross_fixture_symbol_nobody_defines() -> u32;
}

struct Unresolved;

impl Mode for Unresolved {
    fn descriptor(&self) -> ModeDescriptor {
        ModeDescriptor {
            name: "unresolved",
            version: "1",
            description: "Cannot load.",
        }
    }

    fn render(&self, _: ImageView<'_>, _: TargetSize) -> Result<ImageBuf, RenderError> {
        // SAFETY: never runs; the library cannot be loaded with this symbol unresolved.
        let n = unsafe { ross_fixture_symbol_nobody_defines() };
        Err(RenderError::failed(format!("{n}")))
    }
}

plugin_api::export_modes!(Unresolved);
