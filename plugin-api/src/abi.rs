//! Types that cross the plugin boundary. Every one is `#[repr(C)]` and `StableAbi`, so the
//! loader can check a plugin's layout against the host's before calling into it.

use std::fmt;

use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RResult, RSlice, RStr, RString, RVec};
use abi_stable::{declare_root_module_statics, StableAbi};

/// The version of the plugin ABI, independent of ross's own. The host takes a plugin of the
/// same major and minor ("the line"), whatever its patch, older or newer than its own, and
/// plugins of the closed line 0.1 ([`crate::host`]); it refuses every other. Raise the patch
/// number for additions that older plugins can do without (fields appended to
/// [`PluginModule`], constants added to [`PixelFormat`] or [`RenderErrorKind`]); a change that
/// breaks plugins built before is a new line (a new minor while it is 0.x).
///
/// History: 0.1.0, the first (it was the workspace's version then, so every plugin built
/// before this constant carries it); 0.1.1 appended [`PluginModule::decode_need`]; 0.1.2
/// appended [`PluginModule::takes_alpha`]; 0.2.0 made [`PixelFormat`] and [`RenderErrorKind`]
/// open (a `u8` with named values instead of an exhaustive enum), so that adding a value is a
/// patch; 0.2.1 appended [`PluginModule::fits_within`]. Fixtures of each are in `examples/`.
pub const PLUGIN_ABI_VERSION: &str = "0.2.1";

/// How pixels are laid out in a buffer. Every format is 8 bits per channel, interleaved.
///
/// Open: a later ABI version may add formats, so a `match` on one needs a `_` arm. The host
/// hands a plugin only formats of the ABI version it was built against, and refuses a buffer
/// of a format it does not know itself ([`ImageView::validate`]).
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PixelFormat(u8);

#[allow(non_upper_case_globals)]
impl PixelFormat {
    /// Red, green, blue. What the host hands a mode, unless the mode takes alpha.
    pub const Rgb8: PixelFormat = PixelFormat(0);
    /// Red, green, blue, alpha (not premultiplied). Handed only to a mode whose
    /// [`PluginModule::takes_alpha`] says so, for a source with transparency and an output
    /// format that keeps it; the host flattens it onto white otherwise.
    pub const Rgba8: PixelFormat = PixelFormat(1);
    /// One grey channel.
    pub const Gray8: PixelFormat = PixelFormat(2);

    /// The format of value `raw`, known to this version or not.
    pub const fn from_raw(raw: u8) -> PixelFormat {
        PixelFormat(raw)
    }

    /// The value that crosses the boundary.
    pub const fn raw(self) -> u8 {
        self.0
    }

    /// The ABI version that added this format (`None`: one this version does not know, from
    /// a newer peer). The host hands a plugin only formats its ABI version has.
    pub const fn added_in(self) -> Option<(u32, u32, u32)> {
        match self {
            PixelFormat::Rgb8 | PixelFormat::Rgba8 | PixelFormat::Gray8 => Some((0, 1, 0)),
            _ => None,
        }
    }

    /// Bytes one pixel takes; 0 for a format this version does not know (which
    /// [`ImageView::validate`] refuses).
    pub const fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Rgb8 => 3,
            PixelFormat::Rgba8 => 4,
            PixelFormat::Gray8 => 1,
            _ => 0,
        }
    }

    /// Opaque white in this format, as bytes of one pixel (none for a format this version
    /// does not know).
    pub const fn white(self) -> &'static [u8] {
        match self {
            PixelFormat::Rgb8 => &[255, 255, 255],
            PixelFormat::Rgba8 => &[255, 255, 255, 255],
            PixelFormat::Gray8 => &[255],
            _ => &[],
        }
    }
}

impl fmt::Debug for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PixelFormat::Rgb8 => f.write_str("Rgb8"),
            PixelFormat::Rgba8 => f.write_str("Rgba8"),
            PixelFormat::Gray8 => f.write_str("Gray8"),
            PixelFormat(raw) => write!(f, "PixelFormat({raw})"),
        }
    }
}

/// Borrowed decoded pixels: the plugin reads them in place, nothing is copied.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct ImageView<'a> {
    /// Rows of pixels, `stride` bytes apart.
    pub pixels: RSlice<'a, u8>,
    /// Pixels across.
    pub width: u32,
    /// Pixels down.
    pub height: u32,
    /// Bytes from the start of one row to the next; at least `width * bytes_per_pixel`.
    pub stride: u32,
    /// Layout of each pixel.
    pub format: PixelFormat,
}

impl fmt::Debug for ImageView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ImageView({}x{} {:?})",
            self.width, self.height, self.format
        )
    }
}

impl<'a> ImageView<'a> {
    /// A view of tightly packed rows, checked for size.
    pub fn new(
        pixels: &'a [u8],
        width: u32,
        height: u32,
        format: PixelFormat,
    ) -> Result<Self, RenderError> {
        let stride = width as usize * format.bytes_per_pixel();
        let view = ImageView {
            pixels: pixels.into(),
            width,
            height,
            stride: u32::try_from(stride)
                .map_err(|_| RenderError::invalid_input("image too wide"))?,
            format,
        };
        view.validate()?;
        Ok(view)
    }

    /// Checks that the format is one this version knows, the dimensions are non-zero and the
    /// buffer holds every row.
    pub fn validate(&self) -> Result<(), RenderError> {
        if self.format.added_in().is_none() {
            return Err(RenderError::new(
                RenderErrorKind::Unsupported,
                format!(
                    "pixel format {:?} is unknown to this ABI version",
                    self.format
                ),
            ));
        }
        let row = self.width as usize * self.format.bytes_per_pixel();
        let needed = (self.height as usize).saturating_sub(1) * self.stride as usize + row;
        if self.width == 0 || self.height == 0 {
            return Err(RenderError::invalid_input("image has a zero dimension"));
        }
        if (self.stride as usize) < row || self.pixels.len() < needed {
            return Err(RenderError::invalid_input(format!(
                "{}x{} {:?} image needs {needed} bytes with stride {}, buffer has {}",
                self.width,
                self.height,
                self.format,
                self.stride,
                self.pixels.len()
            )));
        }
        Ok(())
    }

    /// The pixels of row `y`, without stride padding.
    pub fn row(&self, y: u32) -> &'a [u8] {
        let start = y as usize * self.stride as usize;
        let len = self.width as usize * self.format.bytes_per_pixel();
        &self.pixels.as_slice()[start..start + len]
    }

    /// True when rows follow each other with no padding.
    pub fn is_packed(&self) -> bool {
        self.stride as usize == self.width as usize * self.format.bytes_per_pixel()
    }
}

/// Pixels a plugin returns. `RVec` carries its own deallocator, so the host frees it safely
/// whichever library allocated it.
#[repr(C)]
#[derive(StableAbi, Clone)]
pub struct ImageBuf {
    /// Rows of pixels, `stride` bytes apart.
    pub pixels: RVec<u8>,
    /// Pixels across.
    pub width: u32,
    /// Pixels down.
    pub height: u32,
    /// Bytes from the start of one row to the next.
    pub stride: u32,
    /// Layout of each pixel.
    pub format: PixelFormat,
}

impl fmt::Debug for ImageBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ImageBuf({}x{} {:?})",
            self.width, self.height, self.format
        )
    }
}

impl ImageBuf {
    /// Wraps tightly packed pixels, checking the size.
    pub fn from_vec(
        pixels: Vec<u8>,
        width: u32,
        height: u32,
        format: PixelFormat,
    ) -> Result<Self, RenderError> {
        ImageView::new(&pixels, width, height, format)?;
        let stride = (width as usize * format.bytes_per_pixel()) as u32;
        Ok(ImageBuf {
            pixels: pixels.into(),
            width,
            height,
            stride,
            format,
        })
    }

    /// A `width` x `height` image filled with one pixel value.
    pub fn filled(width: u32, height: u32, format: PixelFormat, pixel: &[u8]) -> Self {
        assert_eq!(
            pixel.len(),
            format.bytes_per_pixel(),
            "pixel does not match format"
        );
        let count = width as usize * height as usize;
        let mut pixels = Vec::with_capacity(count * pixel.len());
        for _ in 0..count {
            pixels.extend_from_slice(pixel);
        }
        let stride = (width as usize * format.bytes_per_pixel()) as u32;
        ImageBuf {
            pixels: pixels.into(),
            width,
            height,
            stride,
            format,
        }
    }

    /// A borrowed view of these pixels.
    pub fn view(&self) -> ImageView<'_> {
        ImageView {
            pixels: self.pixels.as_rslice(),
            width: self.width,
            height: self.height,
            stride: self.stride,
            format: self.format,
        }
    }
}

/// The size the URL asked for.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetSize {
    /// Requested width, 1 or more.
    pub width: u32,
    /// Requested height, 1 or more.
    pub height: u32,
}

/// What decode of the source a mode needs for a request. The host shrinks a source on load to
/// just cover the requested box (a JPEG in the DCT, several times faster); a mode that crops
/// into the picture by what it finds there (a trimmed border) needs more pixels than that. A
/// mode whose [`PluginModule::fits_within`] says so needs the source only as large as it fits
/// inside the box: a landscape photo resized into 800x1000 is shown 800 wide, not 1000 high.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeNeed {
    /// The source whole, at full size.
    pub full_size: bool,
    /// Otherwise, the decoded source covers at least this box (the host never decodes less
    /// than the requested box covers).
    pub width: u32,
    /// See `width`.
    pub height: u32,
}

impl DecodeNeed {
    /// Just what covers `target`: the host's default.
    pub const fn cover(target: TargetSize) -> DecodeNeed {
        DecodeNeed {
            full_size: false,
            width: target.width,
            height: target.height,
        }
    }

    /// At least `width` x `height` covered.
    pub const fn at_least(width: u32, height: u32) -> DecodeNeed {
        DecodeNeed {
            full_size: false,
            width,
            height,
        }
    }

    /// The source at full size.
    pub const fn full_size() -> DecodeNeed {
        DecodeNeed {
            full_size: true,
            width: 0,
            height: 0,
        }
    }
}

/// Why a render failed, so the host can log and count failures by kind.
///
/// Open, as [`PixelFormat`] is: a later ABI version may add kinds, so a `match` on one needs a
/// `_` arm. Every kind is a failed render to the host, which logs a kind it does not know by
/// its number (`RenderErrorKind(7)`).
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RenderErrorKind(u8);

#[allow(non_upper_case_globals)]
impl RenderErrorKind {
    /// The input was not something this mode can work with.
    pub const InvalidInput: RenderErrorKind = RenderErrorKind(0);
    /// The mode does not support this pixel format or size.
    pub const Unsupported: RenderErrorKind = RenderErrorKind(1);
    /// The plugin panicked; the panic was caught at the boundary.
    pub const Panicked: RenderErrorKind = RenderErrorKind(2);
    /// Any other failure inside the plugin.
    pub const Failed: RenderErrorKind = RenderErrorKind(3);

    /// The kind of value `raw`, known to this version or not.
    pub const fn from_raw(raw: u8) -> RenderErrorKind {
        RenderErrorKind(raw)
    }

    /// The value that crosses the boundary.
    pub const fn raw(self) -> u8 {
        self.0
    }
}

impl fmt::Debug for RenderErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RenderErrorKind::InvalidInput => f.write_str("InvalidInput"),
            RenderErrorKind::Unsupported => f.write_str("Unsupported"),
            RenderErrorKind::Panicked => f.write_str("Panicked"),
            RenderErrorKind::Failed => f.write_str("Failed"),
            RenderErrorKind(raw) => write!(f, "RenderErrorKind({raw})"),
        }
    }
}

/// A failed render: the kind and a one-line message. Becomes a 500 for that request only.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct RenderError {
    /// What went wrong, broadly.
    pub kind: RenderErrorKind,
    /// What went wrong, for the log.
    pub message: RString,
}

impl RenderError {
    /// An error of `kind` with `message`.
    pub fn new(kind: RenderErrorKind, message: impl Into<String>) -> Self {
        RenderError {
            kind,
            message: RString::from(message.into()),
        }
    }

    /// Input this mode cannot work with.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        RenderError::new(RenderErrorKind::InvalidInput, message)
    }

    /// Any other failure.
    pub fn failed(message: impl Into<String>) -> Self {
        RenderError::new(RenderErrorKind::Failed, message)
    }
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for RenderError {}

/// The longest mode name, in bytes.
pub const MAX_MODE_NAME: usize = 64;

/// Whether `name` can name a mode: lower-case ASCII letters, digits, `_` and `-`, starting
/// with a letter, at most [`MAX_MODE_NAME`] bytes (it is a URL segment and a cache folder's
/// name). The one rule: the host refuses a plugin declaring another name, and `ross plugin
/// new` a crate for one.
pub fn is_mode_name(name: &str) -> bool {
    name.len() <= MAX_MODE_NAME && has_mode_shape(name)
}

/// Whether `word` has the shape of a mode name, whatever its length: what tells a sized
/// request's URL (`/{w}/{h}/{mode}/{key}`) from an original's, so that a mode name too long to
/// exist is answered as an unknown mode.
pub fn has_mode_shape(word: &str) -> bool {
    let mut bytes = word.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

impl ImageBuf {
    /// The one check of a render's output, made by the host on every render and by the test
    /// kit alike: a well-formed buffer (every row inside it), not empty, and no larger than
    /// the `target` box.
    pub fn check_output(&self, target: TargetSize) -> Result<(), RenderError> {
        self.view().validate()?;
        if self.width > target.width || self.height > target.height {
            return Err(RenderError::new(
                RenderErrorKind::Failed,
                format!(
                    "{}x{} is larger than the requested {}x{}",
                    self.width, self.height, target.width, target.height
                ),
            ));
        }
        Ok(())
    }
}

/// One mode a plugin provides, as the server lists it.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct ModeInfo {
    /// URL name: lower-case ASCII letters, digits, `_` and `-`, starting with a letter.
    pub name: RString,
    /// The mode's own version; a change purges the mode's cached renders.
    pub version: RString,
    /// One line for the admin page.
    pub description: RString,
}

/// The root module every plugin library exports (through [`crate::export_modes!`]).
///
/// It is a prefix type: a later API version appends fields after `render`, and plugins built
/// before keep loading (the host sees such a field as missing in them and does without). The
/// host reads it through [`crate::host::Plugin`], also for plugins of the closed line 0.1,
/// whose root module ends at `takes_alpha`: a field appended from 0.2.0 on is read through
/// [`crate::host::Plugin`]'s check of the line, never straight from this type.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModule_Ref)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    /// Lists the modes this library provides. An error here refuses the whole library.
    pub modes: extern "C" fn() -> RResult<RVec<ModeInfo>, RenderError>,
    /// Renders `source` in mode `mode` at `target`.
    #[sabi(last_prefix_field)]
    pub render: extern "C" fn(
        mode: RStr<'_>,
        source: ImageView<'_>,
        target: TargetSize,
    ) -> RResult<ImageBuf, RenderError>,
    /// The decode mode `mode` needs for a request of `target` (ABI 0.1.1; plugins built
    /// before it get [`DecodeNeed::cover`]).
    #[sabi(missing_field(option))]
    pub decode_need: extern "C" fn(mode: RStr<'_>, target: TargetSize) -> DecodeNeed,
    /// Whether mode `mode` takes [`PixelFormat::Rgba8`] sources and keeps their transparency
    /// (ABI 0.1.2; plugins built before it are handed RGB only).
    #[sabi(missing_field(option))]
    pub takes_alpha: extern "C" fn(mode: RStr<'_>) -> bool,
    /// Whether mode `mode` shows the source fitted inside the box of its [`DecodeNeed`] rather
    /// than covering it (ABI 0.2.1; plugins built before it cover it).
    #[sabi(missing_field(option))]
    pub fits_within: extern "C" fn(mode: RStr<'_>) -> bool,
}

impl RootModule for PluginModule_Ref {
    declare_root_module_statics! {PluginModule_Ref}
    const BASE_NAME: &'static str = "ross_mode";
    const NAME: &'static str = "ross mode plugin";
    /// [`PLUGIN_ABI_VERSION`]: a plugin built against an incompatible one is refused before
    /// any of its code runs.
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(PLUGIN_ABI_VERSION);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_names() {
        for good in ["crop", "a", "trim-resize_2", &"a".repeat(MAX_MODE_NAME)] {
            assert!(is_mode_name(good), "{good}");
        }
        for bad in ["", "Crop", "2x", "-a", "a/b", "a.b", "é", &"a".repeat(65)] {
            assert!(!is_mode_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_output_check() {
        let target = TargetSize {
            width: 10,
            height: 8,
        };
        let white = |w, h| ImageBuf::filled(w, h, PixelFormat::Rgb8, &[255; 3]);
        assert!(white(10, 8).check_output(target).is_ok());
        assert!(white(4, 8).check_output(target).is_ok(), "smaller is fine");
        let e = white(11, 8).check_output(target).unwrap_err();
        assert_eq!(e.message.as_str(), "11x8 is larger than the requested 10x8");
        let mut short = white(10, 8);
        short.pixels.truncate(10);
        assert!(short.check_output(target).is_err(), "rows missing");
        assert!(white(0, 8).check_output(target).is_err(), "empty");
        let mut unknown = white(10, 8);
        unknown.format = PixelFormat::from_raw(9);
        let e = unknown.check_output(target).unwrap_err();
        assert_eq!(e.kind, RenderErrorKind::Unsupported);
        assert_eq!(
            e.message.as_str(),
            "pixel format PixelFormat(9) is unknown to this ABI version"
        );
    }
}
