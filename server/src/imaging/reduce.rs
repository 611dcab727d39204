//! Decoding in rows: a source read row by row is averaged, as its rows arrive, into cells of
//! k x k source pixels, so that a render's memory follows the size it is shown at, not the
//! source's pixel count (JPEG gets the same from libjpeg-turbo's DCT scaling, WebP from
//! libwebp's scaler). Rows may come in any order and any pixel may be missing: Adam7 passes
//! and GIF interlacing add pixels where they belong, and a pixel never added (outside a GIF's
//! first frame) counts as transparent.
//!
//! The cells are at least [`OVERSAMPLE`] times the size the image is shown at, so the mode's
//! own resampler still does the final reduction: the box average only removes what that
//! resampler would average away anyway (the error against a full decode is measured in the
//! tests, on the corpus).

use image::metadata::Orientation;

use super::buffers::{self, Layout};
use super::decode::{DecodeError, Decoded};
use super::shown::DecodeBox;

/// How much larger than the largest shown size the cells keep the image.
pub(super) const OVERSAMPLE: u32 = 3;

/// The largest cell side: sums of 255 x 255 (premultiplied) over 255 x 255 pixels still fit
/// in a `u32`. A source reduced further is left a little larger than needed.
const MAX_FACTOR: u32 = 255;

/// True for orientations that swap width and height.
pub(super) fn swaps_sides(o: Orientation) -> bool {
    matches!(
        o,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// The largest size (in stored orientation) at which a `size` image is shown in any of
/// `boxes` (upright). `None`: no box, the image is needed whole.
pub(super) fn largest_shown(
    size: (u32, u32),
    boxes: &[DecodeBox],
    orientation: Orientation,
) -> Option<(u32, u32)> {
    boxes
        .iter()
        .map(|&b| {
            let stored = if swaps_sides(orientation) {
                b.transposed()
            } else {
                b
            };
            stored.shown(size)
        })
        .max_by_key(|c| c.0)
}

/// The cell side for a `size` image shown at most at `shown` (1: no reduction).
pub(super) fn factor(size: (u32, u32), shown: Option<(u32, u32)>) -> u32 {
    let Some((w, h)) = shown else { return 1 };
    let kx = size.0 / w.max(1).saturating_mul(OVERSAMPLE);
    let ky = size.1 / h.max(1).saturating_mul(OVERSAMPLE);
    kx.min(ky).clamp(1, MAX_FACTOR)
}

/// Pixels gathered row by row, whole (k = 1) or averaged into k x k cells.
///
/// When rows arrive top to bottom (`in_order`), only one row of cells is summed at a time and
/// each is written out as soon as the rows below it begin: the memory is the output's (4
/// bytes a cell) and one row of sums. Otherwise (Adam7 passes, GIF interlacing) every cell's
/// sums are kept until the end (16 bytes a cell).
pub(super) struct Reducer {
    width: u32,
    height: u32,
    k: u32,
    out_width: u32,
    out_height: u32,
    in_order: bool,
    /// The cell of every source column (k > 1).
    cell_of_x: Vec<u32>,
    /// Premultiplied red, green and blue, and alpha, summed per cell: of the row of cells
    /// `sums_row` when in order, of every cell otherwise (k > 1).
    sums: Vec<u32>,
    /// The row of cells `sums` holds (in order).
    sums_row: u32,
    /// RGBA, straight alpha: the pixels (k = 1), or the cells written out (in order).
    pixels: Vec<u8>,
    /// Whether some pixel added was not opaque.
    translucent: bool,
    /// Pixels added (a pixel never added is transparent).
    added: u64,
}

impl Reducer {
    /// Room for a `width` x `height` image reduced by `k`, its rows added top to bottom
    /// (`in_order`) or in any order.
    pub(super) fn new(
        width: u32,
        height: u32,
        k: u32,
        in_order: bool,
    ) -> Result<Reducer, DecodeError> {
        let k = k.max(1);
        let (out_width, out_height) = (width.div_ceil(k), height.div_ceil(k));
        let cells = out_width as usize * out_height as usize;
        let sum_cells = match (k, in_order) {
            (1, _) => 0,
            (_, true) => out_width as usize,
            (_, false) => cells,
        };
        let mut sums = Vec::new();
        sums.try_reserve_exact(sum_cells * 4)
            .map_err(|_| DecodeError::OutOfMemory {
                bytes: sum_cells * 16,
            })?;
        sums.resize(sum_cells * 4, 0);
        let pixels = if k == 1 || in_order {
            buffers::zeroed(cells * 4)?
        } else {
            Vec::new()
        };
        let cell_of_x = if k == 1 {
            Vec::new()
        } else {
            (0..width).map(|x| x / k).collect()
        };
        Ok(Reducer {
            width,
            height,
            k,
            out_width,
            out_height,
            in_order,
            cell_of_x,
            sums,
            sums_row: 0,
            pixels,
            translucent: false,
            added: 0,
        })
    }

    /// Adds the pixels of `row`, in `layout`, to source row `y` at columns `x0`, `x0 + dx`,
    /// ... Pixels outside the image are ignored; in order, so are rows above the last one.
    pub(super) fn add(&mut self, y: u32, x0: u32, dx: u32, row: &[u8], layout: Layout) {
        if y >= self.height {
            return;
        }
        if self.in_order && self.k > 1 {
            let cell_row = y / self.k;
            if cell_row < self.sums_row {
                return;
            }
            while self.sums_row < cell_row {
                self.write_out_row();
            }
        }
        let channels = layout.channels();
        let columns = (x0..self.width).step_by(dx.max(1) as usize);
        for (x, px) in columns.zip(row.chunks_exact(channels)) {
            let (r, g, b, a) = match layout {
                Layout::L8 => (px[0], px[0], px[0], 255),
                Layout::La8 => (px[0], px[0], px[0], px[1]),
                Layout::Rgb8 => (px[0], px[1], px[2], 255),
                Layout::Rgba8 => (px[0], px[1], px[2], px[3]),
            };
            self.put(x, y, [r, g, b, a]);
        }
    }

    /// Adds one RGBA pixel at (`x`, `y`), inside the image (and, in order, in the row of
    /// cells being summed).
    fn put(&mut self, x: u32, y: u32, [r, g, b, a]: [u8; 4]) {
        self.translucent |= a != 255;
        self.added += 1;
        if self.k == 1 {
            let at = (y as usize * self.width as usize + x as usize) * 4;
            self.pixels[at..at + 4].copy_from_slice(&[r, g, b, a]);
            return;
        }
        let cell_row = if self.in_order { 0 } else { y / self.k };
        let cell =
            cell_row as usize * self.out_width as usize + self.cell_of_x[x as usize] as usize;
        let sum = &mut self.sums[cell * 4..cell * 4 + 4];
        let a32 = u32::from(a);
        sum[0] += u32::from(r) * a32;
        sum[1] += u32::from(g) * a32;
        sum[2] += u32::from(b) * a32;
        sum[3] += a32;
    }

    /// The average of the cell at (`cx`, `cy`) from its sums, straight RGBA.
    fn cell(&self, cx: u32, cy: u32, sums: &[u32]) -> [u8; 4] {
        let rows = self.k.min(self.height - cy * self.k);
        let columns = self.k.min(self.width - cx * self.k);
        let area = rows * columns;
        let alpha = sums[3];
        let colour = |c: u32| {
            if alpha == 0 {
                0
            } else {
                ((u64::from(c) + u64::from(alpha) / 2) / u64::from(alpha)) as u8
            }
        };
        [
            colour(sums[0]),
            colour(sums[1]),
            colour(sums[2]),
            ((alpha + area / 2) / area) as u8,
        ]
    }

    /// Writes the row of cells being summed out to the pixels and starts the next (in order).
    fn write_out_row(&mut self) {
        let cy = self.sums_row;
        if cy < self.out_height {
            let row_start = cy as usize * self.out_width as usize * 4;
            for cx in 0..self.out_width {
                let at = cx as usize * 4;
                let cell = self.cell(cx, cy, &self.sums[at..at + 4]);
                self.pixels[row_start + at..row_start + at + 4].copy_from_slice(&cell);
            }
        }
        self.sums.fill(0);
        self.sums_row += 1;
    }

    /// The image: RGB, or RGBA when some pixel is not opaque (or was never added).
    pub(super) fn finish(mut self) -> Result<Decoded, DecodeError> {
        let whole = u64::from(self.width) * u64::from(self.height);
        let translucent = self.translucent || self.added < whole;
        if self.k > 1 && self.in_order {
            while self.sums_row < self.out_height {
                self.write_out_row();
            }
        } else if self.k > 1 {
            let cells = self.out_width as usize * self.out_height as usize;
            let mut pixels = buffers::with_capacity(cells * 4)?;
            for cy in 0..self.out_height {
                for cx in 0..self.out_width {
                    let at = (cy as usize * self.out_width as usize + cx as usize) * 4;
                    pixels.extend_from_slice(&self.cell(cx, cy, &self.sums[at..at + 4]));
                }
            }
            self.sums = Vec::new();
            self.pixels = pixels;
        }
        let pixels = if translucent {
            self.pixels
        } else {
            rgba_to_rgb_in_place(self.pixels)
        };
        Ok(Decoded {
            pixels: pixels.into(),
            width: self.out_width,
            height: self.out_height,
            alpha: translucent,
        })
    }
}

/// RGBA whose alpha is all 255 as RGB, in the same allocation.
fn rgba_to_rgb_in_place(mut pixels: Vec<u8>) -> Vec<u8> {
    let count = pixels.len() / 4;
    for i in 0..count {
        pixels.copy_within(i * 4..i * 4 + 3, i * 3);
    }
    pixels.truncate(count * 3);
    pixels.shrink_to_fit();
    pixels
}

/// The pass geometry of Adam7 interlacing: first column, first row, column step, row step.
const ADAM7: [(u32, u32, u32, u32); 7] = [
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
];

/// Where each row of an interlaced PNG goes, in the order the decoder returns them: (row, first
/// column, column step). Passes with no pixel are skipped, as decoders do.
pub(super) fn adam7_rows(width: u32, height: u32) -> impl Iterator<Item = (u32, u32, u32)> {
    ADAM7.into_iter().flat_map(move |(x0, y0, dx, dy)| {
        let samples = width.saturating_sub(x0).div_ceil(dx);
        let lines = if samples == 0 {
            0
        } else {
            height.saturating_sub(y0).div_ceil(dy)
        };
        (0..lines).map(move |line| (y0 + line * dy, x0, dx))
    })
}

/// The row each row of an interlaced GIF frame of `height` rows goes to, in file order.
pub(super) fn gif_interlaced_rows(height: u32) -> impl Iterator<Item = u32> {
    [(0, 8), (4, 8), (2, 4), (1, 2)]
        .into_iter()
        .flat_map(move |(start, step)| (start..height).step_by(step))
}

/// Reduces decoded `pixels` (`layout`) the way rows would be: for decoders that hand over
/// a whole image.
#[cfg(test)]
pub(super) fn reduce_whole(
    pixels: &[u8],
    layout: Layout,
    width: u32,
    height: u32,
    k: u32,
) -> Result<Decoded, DecodeError> {
    let mut reducer = Reducer::new(width, height, k, true)?;
    let stride = width as usize * layout.channels();
    for (y, row) in pixels.chunks_exact(stride).enumerate() {
        reducer.add(y as u32, 0, 1, row, layout);
    }
    reducer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_average_premultiplied_and_missing_pixels_are_transparent() {
        // 4x2, k = 2: two cells. The left one is half opaque red, half transparent green.
        for in_order in [true, false] {
            let mut r = Reducer::new(4, 2, 2, in_order).unwrap();
            let rows: [&[u8]; 2] = [
                &[
                    255, 0, 0, 255, 255, 0, 0, 255, 10, 20, 30, 255, 10, 20, 30, 255,
                ],
                &[0, 255, 0, 0, 0, 255, 0, 0, 10, 20, 30, 255, 10, 20, 30, 255],
            ];
            let order: &[u32] = if in_order { &[0, 1] } else { &[1, 0] };
            for &y in order {
                r.add(y, 0, 1, rows[y as usize], Layout::Rgba8);
            }
            let out = r.finish().unwrap();
            assert_eq!((out.width, out.height, out.alpha), (2, 1, true));
            assert_eq!(out.pixels, vec![255, 0, 0, 128, 10, 20, 30, 255]);
        }
        // A pixel never added is transparent: opaque input, one row short.
        let mut r = Reducer::new(2, 4, 2, true).unwrap();
        for y in 0..3 {
            r.add(y, 0, 1, &[1, 2, 3, 1, 2, 3], Layout::Rgb8);
        }
        let out = r.finish().unwrap();
        assert!(out.alpha);
        assert_eq!((out.pixels[3], out.pixels[7]), (255, 128));
    }

    #[test]
    fn opaque_whole_images_come_out_rgb() {
        let out = reduce_whole(&[1, 2, 3, 4, 5, 6], Layout::Rgb8, 2, 1, 1).unwrap();
        assert_eq!(
            (out.pixels.into_vec(), out.alpha),
            (vec![1, 2, 3, 4, 5, 6], false)
        );
        // Partial cells at the edges average what they hold.
        let out = reduce_whole(&[10, 20, 30], Layout::L8, 3, 1, 2).unwrap();
        assert_eq!(out.pixels, vec![15, 15, 15, 30, 30, 30]);
    }

    #[test]
    fn every_pixel_of_an_interlaced_image_is_placed_once() {
        for (w, h) in [(1, 1), (3, 2), (8, 8), (13, 7), (2, 9)] {
            let mut seen = vec![0u8; (w * h) as usize];
            for (y, x0, dx) in adam7_rows(w, h) {
                for x in (x0..w).step_by(dx as usize) {
                    seen[(y * w + x) as usize] += 1;
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "{w}x{h}: {seen:?}");
            let mut rows: Vec<u32> = gif_interlaced_rows(h).collect();
            rows.sort_unstable();
            assert_eq!(rows, (0..h).collect::<Vec<_>>());
        }
    }

    #[test]
    fn the_factor_keeps_three_times_the_shown_size() {
        assert_eq!(factor((6800, 6800), Some((300, 300))), 7);
        assert_eq!(factor((1000, 800), Some((300, 240))), 1);
        assert_eq!(factor((1000, 800), None), 1);
        assert_eq!(factor((100_000, 100), Some((1, 1))), 33);
        assert_eq!(factor((100_000, 100_000), Some((1, 1))), MAX_FACTOR);
    }
}
