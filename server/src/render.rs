//! The CPU work of one variant: decode the original (for the largest of the sizes asked for
//! lately, so that the next ones reuse the decode), run the mode, encode. It runs in render
//! workers (`crate::worker`), and in-process in the benchmarks, which measure exactly what a
//! worker does per render.

use std::time::Instant;

use plugin_api::{ImageView, PixelFormat, TargetSize};
use ross_config::{OutputFormat, OutputSettings};

use crate::error::{AppError, ErrorCode};
use serde::{Deserialize, Serialize};

use crate::imaging::{decode, decode_for, encode, largest_box, DecodeBox, DecodeWarning, Decoded};
use crate::plugins::ModeCode;
use crate::telemetry::{stage, Metrics};
use crate::worker::protocol::{Stage, Timings};

/// Pixels decoded from an original, and the largest box they serve.
#[derive(Debug)]
pub struct DecodedSource {
    /// The pixels.
    pub image: Decoded,
    /// The box that shows them largest of those they were decoded for; `None`: any (a
    /// full-size decode).
    pub good_up_to: Option<DecodeBox>,
    /// What the decoder got past (reported once, with the render that decoded).
    pub warnings: Vec<DecodeWarning>,
}

impl DecodedSource {
    /// Decodes `source` for the largest of `boxes` (the variant's need first); with no box,
    /// full size.
    pub fn decode(
        source: &[u8],
        boxes: &[DecodeBox],
        max_pixels: u64,
    ) -> Result<DecodedSource, AppError> {
        let decoding = decode_for(source, boxes, max_pixels)?;
        // Pixels reduced for the boxes serve up to the largest of them; full-size ones, any.
        let good_up_to = decoding
            .reduced
            .then(|| largest_box(decoding.image.size(), boxes))
            .flatten();
        Ok(DecodedSource {
            image: decoding.image,
            good_up_to,
            warnings: decoding.warnings,
        })
    }

    /// Whether these pixels serve a render needing a decode for `need` (`None`: the full
    /// size) as a decode for it would: they were decoded (shrunk, trimmed) for a box that shows
    /// them at least as large.
    pub fn serves(&self, need: Option<DecodeBox>) -> bool {
        let (Some(limit), Some(need)) = (self.good_up_to, need) else {
            return self.good_up_to.is_none();
        };
        let size = self.image.size();
        need.scale(size) <= limit.scale(size) * (1.0 + 1e-9)
    }

    /// Bytes of pixels held.
    pub fn weight(&self) -> usize {
        self.image.pixels.len()
    }
}

/// One size of one mode asked for lately, which the whitelist allows: an original is decoded
/// for the largest of them, so that its next sizes reuse the decode (and its reduced copy).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shape {
    /// The mode.
    pub mode: String,
    /// The box's width.
    pub width: u32,
    /// The box's height.
    pub height: u32,
}

/// The decode a render of `mode` at `target` needs (`None`: full size), and the boxes to
/// decode for: that need, then the box of every shape in `shapes` (the sizes asked for lately)
/// that `shape_box` gives, so that the next sizes of the same original reuse the decode. A
/// full-size need of the render decodes the whole original (no box at all); one of another
/// shape is left to its own requests (nothing smaller than the whole serves it, and it must not
/// make every other decode whole).
pub fn decode_boxes(
    mode: &ModeCode,
    target: TargetSize,
    shapes: &[Shape],
    mut shape_box: impl FnMut(&Shape) -> Option<DecodeBox>,
) -> (Option<DecodeBox>, Vec<DecodeBox>) {
    let need = mode.decode_box(target);
    let Some(own) = need else {
        return (None, Vec::new());
    };
    let mut boxes = vec![own];
    boxes.extend(shapes.iter().filter_map(&mut shape_box));
    (need, boxes)
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Renders and encodes from decoded pixels, telling `on_stage` as the mode and the encoder
/// begin (a worker reports them, so that a crash is blamed on the right stage).
pub fn render_decoded(
    decoded: &Decoded,
    mode: &ModeCode,
    target: TargetSize,
    format: OutputFormat,
    output: &OutputSettings,
    on_stage: &mut dyn FnMut(Stage),
) -> Result<(Vec<u8>, Timings), AppError> {
    // Transparency goes to the mode only if it takes it and the format keeps it.
    let keeps_alpha = format.has_alpha() && mode.takes_alpha();
    let image = if keeps_alpha {
        std::borrow::Cow::Borrowed(decoded)
    } else {
        decoded.flattened()?
    };
    let pixel_format = if image.alpha {
        PixelFormat::Rgba8
    } else {
        PixelFormat::Rgb8
    };
    let view =
        ImageView::new(&image.pixels, image.width, image.height, pixel_format).map_err(|e| {
            AppError::new(ErrorCode::DecodeFailed, "The image could not be decoded.")
                .detailed(format!("decoder produced an invalid buffer: {e}"))
        })?;
    on_stage(Stage::Render);
    let started = Instant::now();
    let out = mode.render(view, target)?;
    let render_us = micros(started);
    on_stage(Stage::Encode);
    let started = Instant::now();
    let encoded = encode(out.view(), format, output)?;
    Ok((
        encoded,
        Timings {
            decode_us: None,
            copy_us: None,
            render_us,
            encode_us: micros(started),
        },
    ))
}

/// Decode, render and encode, in memory, in this process: the whole CPU cost of a variant as
/// a worker spends it (for the benchmarks), with each stage's time reported to `metrics`.
pub fn render_bytes(
    source: &[u8],
    mode: &ModeCode,
    target: TargetSize,
    max_pixels: u64,
    format: OutputFormat,
    output: &OutputSettings,
    metrics: &Metrics,
) -> Result<Vec<u8>, AppError> {
    let started = Instant::now();
    let boxes: Vec<DecodeBox> = mode.decode_box(target).into_iter().collect();
    let decoded = decode(source, &boxes, max_pixels)?;
    metrics.stage(stage::DECODE, started);
    let (encoded, timings) = render_decoded(&decoded, mode, target, format, output, &mut |_| {})?;
    report_timings(metrics, &timings);
    Ok(encoded)
}

/// Every mode of the plugins in a folder, opened in this process: the benchmarks' way to
/// measure exactly what a worker computes, without the process around it.
#[derive(Debug)]
pub struct InProcessModes(std::collections::HashMap<String, ModeCode>);

impl InProcessModes {
    /// Opens and test-renders every plugin in `dir`; panics on one that fails (benchmarks
    /// run on the workspace's own build).
    pub fn load_dir(dir: &std::path::Path) -> InProcessModes {
        let modes = ModeCode::load_dir(dir)
            .unwrap_or_else(|e| panic!("the plugins in {} load: {e}", dir.display()));
        InProcessModes(modes.into_iter().map(|m| (m.name.clone(), m)).collect())
    }

    /// The mode called `name`.
    pub fn get(&self, name: &str) -> Option<&ModeCode> {
        self.0.get(name)
    }
}

/// Reports a render's stage times to `metrics`.
pub fn report_timings(metrics: &Metrics, timings: &Timings) {
    let us = std::time::Duration::from_micros;
    if let Some(decode) = timings.decode_us {
        metrics.stage_took(stage::DECODE, us(decode));
    }
    metrics.stage_took(stage::RENDER, us(timings.render_us));
    metrics.stage_took(stage::ENCODE, us(timings.encode_us));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pixels(width: u32, height: u32, good_up_to: Option<DecodeBox>) -> DecodedSource {
        DecodedSource {
            image: Decoded::rgb(vec![0; (width * height * 3) as usize], width, height),
            good_up_to,
            warnings: Vec::new(),
        }
    }

    #[test]
    fn pixels_serve_boxes_up_to_the_one_they_were_decoded_for() {
        let cover = |w, h| Some(DecodeBox::cover(w, h));
        let fit = |w, h| Some(DecodeBox::fit(w, h));
        // A 2400x1600 JPEG decoded at 1/4 for 300x300: 600x400, good up to 450x300.
        let p = pixels(600, 400, cover(300, 300));
        assert!(p.serves(cover(300, 300)));
        assert!(p.serves(cover(72, 72)));
        assert!(p.serves(cover(450, 300)));
        assert!(!p.serves(cover(301, 301)));
        assert!(!p.serves(cover(1024, 768)));
        assert!(!p.serves(None));
        // Fitted within a box, the photo is shown 450x300 in 450x450 and in 800x300.
        assert!(p.serves(fit(450, 450)) && p.serves(fit(800, 300)));
        assert!(!p.serves(fit(451, 451)) && !p.serves(fit(1024, 768)));
        let whole = pixels(600, 400, None);
        assert!(whole.serves(cover(2000, 2000)) && whole.serves(None));
        // Decoded for a box it is fitted within: 1/2 of a 2400x1600 for 1024x768 (1024x683).
        let p = pixels(1200, 800, fit(1024, 768));
        assert!(p.serves(fit(800, 1000)) && p.serves(cover(400, 500)));
        assert!(p.serves(cover(1024, 682)) && !p.serves(cover(1024, 768)));
    }
}
