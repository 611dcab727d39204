//! Helpers for a plugin's own tests (feature `testing`): render a real image through the
//! plugin's exported module in-process, exactly as the server calls it, and check the result
//! the way the server does.
//!
//! ```toml
//! [dev-dependencies]
//! ross-plugin-kit = { version = "0.1", features = ["testing"] }
//! ```
//!
//! ```ignore
//! use plugin_kit::testing::{sample, Harness};
//!
//! #[test]
//! fn renders_a_photo() {
//!     let plugin = Harness::new(super::instantiate_root_module());
//!     let out = plugin.render_file("squash", &sample("ladybird.jpg"), 200, 300).unwrap();
//!     assert_eq!((out.width, out.height), (200, 300));
//! }
//! ```

use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageReader};
use plugin_api::abi_stable::std_types::RStr;

use plugin_api::{ImageBuf, PixelFormat, PluginModule_Ref, RenderError, TargetSize};

/// A sample image bundled with this crate (the images ross serves on its built-in defaults):
/// `ladybird.jpg`, `storm.jpg`, `flower.jpg`, `rotated-exif.jpg` (EXIF orientation 6),
/// `transparent.png`.
pub fn sample(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples")
        .join(name);
    assert!(path.exists(), "no sample image {}", path.display());
    path
}

/// Decodes an image file as the server hands it to a mode: upright (EXIF orientation
/// applied), transparency flattened onto white, 8-bit RGB.
pub fn load_image(path: &Path) -> ImageBuf {
    let fail = |e: &dyn std::fmt::Display| -> ! { panic!("cannot read {}: {e}", path.display()) };
    let reader = ImageReader::open(path)
        .unwrap_or_else(|e| fail(&e))
        .with_guessed_format()
        .unwrap_or_else(|e| fail(&e));
    let mut decoder = reader.into_decoder().unwrap_or_else(|e| fail(&e));
    let orientation = decoder.orientation().unwrap_or_else(|e| fail(&e));
    let mut image = DynamicImage::from_decoder(decoder).unwrap_or_else(|e| fail(&e));
    image.apply_orientation(orientation);
    let rgba = image.into_rgba8();
    let (width, height) = rgba.dimensions();
    let mut rgb = Vec::with_capacity(width as usize * height as usize * 3);
    for px in rgba.pixels() {
        let a = u32::from(px[3]);
        for c in &px.0[..3] {
            rgb.push(((u32::from(*c) * a + 255 * (255 - a) + 127) / 255) as u8);
        }
    }
    ImageBuf::from_vec(rgb, width, height, PixelFormat::Rgb8).expect("a packed RGB buffer")
}

/// Writes `image` as a PNG, to look at a render while developing.
pub fn save_png(image: &ImageBuf, path: &Path) {
    let packed: Vec<u8> = (0..image.height)
        .flat_map(|y| image.view().row(y).to_vec())
        .collect();
    let color = match image.format {
        PixelFormat::Rgb8 => image::ExtendedColorType::Rgb8,
        PixelFormat::Rgba8 => image::ExtendedColorType::Rgba8,
        PixelFormat::Gray8 => image::ExtendedColorType::L8,
        other => panic!("cannot save pixel format {other:?}"),
    };
    image::save_buffer(path, &packed, image.width, image.height, color)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// Mean of each channel over the whole image (0..255), for assertions on colour.
pub fn mean(image: &ImageBuf) -> Vec<f64> {
    let bpp = image.format.bytes_per_pixel();
    let mut sums = vec![0f64; bpp];
    for y in 0..image.height {
        for px in image.view().row(y).chunks_exact(bpp) {
            for (s, v) in sums.iter_mut().zip(px) {
                *s += f64::from(*v);
            }
        }
    }
    let n = f64::from(image.width) * f64::from(image.height);
    sums.into_iter().map(|s| s / n.max(1.0)).collect()
}

/// A plugin's exported module, called in-process through the same ABI entry points the
/// server uses, with the server's checks on the output.
#[derive(Clone, Copy)]
pub struct Harness {
    module: PluginModule_Ref,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Harness")
    }
}

impl Harness {
    /// Wraps the module of the plugin under test: `Harness::new(instantiate_root_module())`.
    pub fn new(module: PluginModule_Ref) -> Harness {
        Harness { module }
    }

    /// The modes the plugin declares: name, version, description.
    pub fn modes(&self) -> Vec<(String, String, String)> {
        let modes = self.module.modes()()
            .into_result()
            .expect("the plugin lists its modes");
        modes
            .iter()
            .map(|m| {
                (
                    m.name.to_string(),
                    m.version.to_string(),
                    m.description.to_string(),
                )
            })
            .collect()
    }

    /// Renders `source` in `mode` at `width` x `height`. An output the server would refuse
    /// (a malformed buffer, or larger than the box) is an error here too.
    pub fn render(
        &self,
        mode: &str,
        source: &ImageBuf,
        width: u32,
        height: u32,
    ) -> Result<ImageBuf, RenderError> {
        let target = TargetSize { width, height };
        let out = self.module.render()(RStr::from(mode), source.view(), target).into_result()?;
        out.check_output(target).map_err(|e| {
            RenderError::new(
                e.kind,
                format!("the server would refuse this output: {}", e.message),
            )
        })?;
        Ok(out)
    }

    /// [`load_image`] then [`Harness::render`].
    pub fn render_file(
        &self,
        mode: &str,
        path: &Path,
        width: u32,
        height: u32,
    ) -> Result<ImageBuf, RenderError> {
        self.render(mode, &load_image(path), width, height)
    }
}
