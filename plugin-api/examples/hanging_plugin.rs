//! Test fixture: a plugin whose mode `hang` never returns from a render (it sleeps for an
//! hour). The server's test render at load time must give up on it and refuse the plugin
//! while other reloads go on.

use plugin_api::{ImageBuf, ImageView, Mode, ModeDescriptor, RenderError, TargetSize};

struct Hang;

impl Mode for Hang {
    fn descriptor(&self) -> ModeDescriptor {
        ModeDescriptor {
            name: "hang",
            version: "1",
            description: "Never finishes a render.",
        }
    }

    fn render(&self, _: ImageView<'_>, _: TargetSize) -> Result<ImageBuf, RenderError> {
        std::thread::sleep(std::time::Duration::from_secs(3600));
        Err(RenderError::invalid_input("woke up"))
    }
}

plugin_api::export_modes!(Hang);
