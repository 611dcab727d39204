//! Test fixture: a plugin whose mode `panic` panics while rendering anything larger than a
//! thumbnail (so it passes the server's test render at load time). The server must answer
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

    fn render(&self, src: ImageView<'_>, target: TargetSize) -> Result<ImageBuf, RenderError> {
        if target.width <= 32 {
            return plugin_kit::ops::crop_to(src, target.width, target.height);
        }
        panic!(
            "asked to render {}x{}, and this mode always panics",
            target.width, target.height
        )
    }
}

plugin_api::export_modes!(Panic);
