//! The boxes an image is decoded for: how large a render shows it decides how small a decode
//! may be (JPEG's DCT scale, WebP's scaler, the cells of PNG and GIF rows), what decoded
//! pixels kept for reuse still serve, and how large a reduced original is kept.

use plugin_kit::geometry::{cover, fit};
use serde::{Deserialize, Serialize};

/// A box a render shows an image in, upright width and height: covered (the image at least
/// that wide and that high, then cropped: `crop`) or fitted within (at most that wide and that
/// high, one side equal: `resize`, whose plugins say so with `fits_within`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DecodeBox {
    /// Pixels across.
    pub width: u32,
    /// Pixels down.
    pub height: u32,
    /// Fitted within rather than covered.
    pub fit: bool,
}

impl DecodeBox {
    /// A box the image covers.
    pub const fn cover(width: u32, height: u32) -> DecodeBox {
        DecodeBox {
            width,
            height,
            fit: false,
        }
    }

    /// A box the image is fitted within.
    pub const fn fit(width: u32, height: u32) -> DecodeBox {
        DecodeBox {
            width,
            height,
            fit: true,
        }
    }

    /// The size at which an image of `size` is shown in this box.
    pub fn shown(self, size: (u32, u32)) -> (u32, u32) {
        if self.fit {
            fit(size, (self.width, self.height))
        } else {
            cover(size, (self.width, self.height))
        }
    }

    /// The scale at which an image of `size` is shown in this box (its shown width over its
    /// width, unrounded).
    pub fn scale(self, size: (u32, u32)) -> f64 {
        let across = f64::from(self.width) / f64::from(size.0.max(1));
        let down = f64::from(self.height) / f64::from(size.1.max(1));
        if self.fit {
            across.min(down)
        } else {
            across.max(down)
        }
    }

    /// The same box with its sides swapped: for an image stored on its side (EXIF
    /// orientation).
    pub fn transposed(self) -> DecodeBox {
        DecodeBox {
            width: self.height,
            height: self.width,
            fit: self.fit,
        }
    }
}

impl From<(u32, u32)> for DecodeBox {
    /// A box the image covers.
    fn from((width, height): (u32, u32)) -> DecodeBox {
        DecodeBox::cover(width, height)
    }
}

impl std::fmt::Display for DecodeBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.fit { "within" } else { "covering" };
        write!(f, "{how} {}x{}", self.width, self.height)
    }
}

/// The box of `boxes` that shows an image of `size` largest; `None` when there is none.
pub fn largest(size: (u32, u32), boxes: &[DecodeBox]) -> Option<DecodeBox> {
    boxes
        .iter()
        .copied()
        .max_by(|a, b| a.scale(size).total_cmp(&b.scale(size)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_landscape_photo_fitted_in_a_portrait_box_is_shown_smaller_than_covering_it() {
        let photo = (3000, 2000);
        assert_eq!(DecodeBox::cover(800, 1000).shown(photo), (1500, 1000));
        assert_eq!(DecodeBox::fit(800, 1000).shown(photo), (800, 533));
        assert_eq!(DecodeBox::fit(1024, 768).shown(photo), (1024, 683));
        assert!((DecodeBox::fit(800, 1000).scale(photo) - 800.0 / 3000.0).abs() < 1e-12);
        assert!((DecodeBox::cover(800, 1000).scale(photo) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn the_largest_box_is_the_one_that_shows_the_image_largest() {
        let boxes = [
            DecodeBox::cover(400, 500),
            DecodeBox::fit(800, 1000),
            DecodeBox::fit(1024, 768),
        ];
        // Landscape: 1024 across within 1024x768, against 750 across to cover 400x500.
        assert_eq!(largest((3000, 2000), &boxes), Some(boxes[2]));
        // Portrait: 1000 down within 800x1000.
        assert_eq!(largest((2000, 3000), &boxes), Some(boxes[1]));
        // A panorama: covering 400x500 needs it 1500 across.
        assert_eq!(largest((6000, 2000), &boxes), Some(boxes[0]));
        assert_eq!(largest((10, 10), &[]), None);
    }

    #[test]
    fn transposing_keeps_how_the_box_is_filled() {
        assert_eq!(DecodeBox::fit(3, 4).transposed(), DecodeBox::fit(4, 3));
        assert_eq!(DecodeBox::from((3, 4)).transposed(), DecodeBox::cover(4, 3));
    }
}
