//! Test fixture: one of two builds of the mode `swap` (`swap_red` version 1.0.0 and
//! `swap_blue` version 2.0.0), each filling the box with its own colour, so a test can tell
//! which build rendered a response while it replaces one with the other.

use plugin_api::{ImageBuf, ImageView, Mode, ModeDescriptor, PixelFormat, RenderError, TargetSize};

struct Swap;

impl Mode for Swap {
    fn descriptor(&self) -> ModeDescriptor {
        ModeDescriptor {
            name: "swap",
            version: "2.0.0",
            description: "Fills the box with blue.",
        }
    }

    fn render(&self, _: ImageView<'_>, target: TargetSize) -> Result<ImageBuf, RenderError> {
        Ok(ImageBuf::filled(
            target.width,
            target.height,
            PixelFormat::Rgb8,
            &[20, 20, 220],
        ))
    }
}

plugin_api::export_modes!(Swap);
