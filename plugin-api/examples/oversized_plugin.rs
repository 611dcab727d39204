//! Test fixture: a plugin whose mode `oversized` answers with an image larger than the box it
//! was asked for. The server's test render at load time must refuse it.

use plugin_api::{ImageBuf, ImageView, Mode, ModeDescriptor, PixelFormat, RenderError, TargetSize};

struct Oversized;

impl Mode for Oversized {
    fn descriptor(&self) -> ModeDescriptor {
        ModeDescriptor {
            name: "oversized",
            version: "1",
            description: "Breaks the contract: its output is larger than the box.",
        }
    }

    fn render(&self, _: ImageView<'_>, target: TargetSize) -> Result<ImageBuf, RenderError> {
        Ok(ImageBuf::filled(
            target.width + 10,
            target.height,
            PixelFormat::Rgb8,
            &[0, 0, 0],
        ))
    }
}

plugin_api::export_modes!(Oversized);
