//! Test fixture: a plugin whose mode `panic` panics while rendering. The server must answer
//! that one request with a 500 and keep serving every other.

use plugin_api::{ImageBuf, ImageView, Mode, ModeDescriptor, RenderError, TargetSize};

struct Panic;

impl Mode for Panic {
    fn descriptor(&self) -> ModeDescriptor {
        ModeDescriptor {
            name: "panic",
            version: "1",
            description: "Panics on every render.",
        }
    }

    fn render(&self, _: ImageView<'_>, target: TargetSize) -> Result<ImageBuf, RenderError> {
        panic!(
            "asked to render {}x{}, and this mode always panics",
            target.width, target.height
        )
    }
}

plugin_api::export_modes!(Panic);
