//! Test fixture: a plugin that panics while the server asks for its modes. The loader must
//! refuse it with "initialisation failed" and load the other plugins.

use plugin_api::{ImageBuf, ImageView, Mode, ModeDescriptor, RenderError, TargetSize};

struct Broken;

impl Mode for Broken {
    fn descriptor(&self) -> ModeDescriptor {
        panic!("this plugin cannot describe itself")
    }

    fn render(&self, _: ImageView<'_>, _: TargetSize) -> Result<ImageBuf, RenderError> {
        Err(RenderError::failed("never called"))
    }
}

plugin_api::export_modes!(Broken);
