//! Shared by the isolation fixtures (`stalling`, `crashing`, `aborting`, `greedy`,
//! `escaping`): a mode that renders like `crop` below [`MISBEHAVES_FROM`] pixels wide, so it
//! passes the server's test render at load time, and runs its own misbehaviour from there.

/// Widths from which the mode misbehaves.
pub const MISBEHAVES_FROM: u32 = 100;

/// Declares `$ty`, a mode named `$name` that renders like `crop` below
/// [`MISBEHAVES_FROM`] pixels wide and otherwise calls `$misbehave(target)`, and exports it.
#[macro_export]
macro_rules! misbehaving_mode {
    ($ty:ident, $name:literal, $description:literal, $misbehave:expr) => {
        struct $ty;

        impl plugin_api::Mode for $ty {
            fn descriptor(&self) -> plugin_api::ModeDescriptor {
                plugin_api::ModeDescriptor {
                    name: $name,
                    version: "1.0.0",
                    description: $description,
                }
            }

            fn render(
                &self,
                src: plugin_api::ImageView<'_>,
                target: plugin_api::TargetSize,
            ) -> Result<plugin_api::ImageBuf, plugin_api::RenderError> {
                if target.width < support::MISBEHAVES_FROM {
                    let region = plugin_kit::geometry::cover_region(
                        (src.width, src.height),
                        (target.width, target.height),
                    );
                    return plugin_kit::ops::resize_region(
                        src,
                        region,
                        target.width,
                        target.height,
                    );
                }
                let misbehave: fn(
                    plugin_api::TargetSize,
                )
                    -> Result<plugin_api::ImageBuf, plugin_api::RenderError> = $misbehave;
                misbehave(target)
            }
        }

        plugin_api::export_modes!($ty);
    };
}
