//! GIF, first frame, row by row from the `gif` crate's streaming LZW decoder into
//! [`Reducer`]'s cells, as browsers show it:
//!
//! - the canvas is the logical screen (grown to the first frame if that is larger); what the
//!   frame does not cover is transparent (browsers ignore the background colour), so a 43-byte
//!   file with a 7000x7000 screen and one pixel costs the cells, not 49 million pixels;
//! - a frame with no colour table, local or global, is drawn in opaque black (as Chromium
//!   does; the `gif` crate's own reader refuses such files), and so is an index past the end
//!   of its table;
//! - interlaced rows go where they belong; a frame whose data ends early shows what arrived.

use image::metadata::Orientation;

use super::buffers::Layout;
use super::decode::{check_pixels, DecodeError, Decoded};
use super::reduce::{factor, gif_interlaced_rows, largest_shown, Reducer};
use super::shown::DecodeBox;
use super::sniff::Format;
use gif::streaming_decoder::{Block, Decoded as Event, OutputBuffer, StreamingDecoder};

fn malformed(reason: impl ToString) -> DecodeError {
    DecodeError::Malformed {
        format: Format::Gif,
        reason: reason.to_string(),
    }
}

/// The first frame's placement and colours.
struct Frame {
    left: u32,
    top: u32,
    width: u32,
    height: u32,
    interlaced: bool,
    /// RGBA for each of the 256 indexes.
    colours: Vec<[u8; 4]>,
}

impl Frame {
    fn new(frame: &gif::Frame<'_>, global: Option<&[u8]>) -> Frame {
        let table = frame.palette.as_deref().or(global).unwrap_or_default();
        let mut colours = vec![[0, 0, 0, 255]; 256];
        for (colour, rgb) in colours.iter_mut().zip(table.chunks_exact(3)) {
            *colour = [rgb[0], rgb[1], rgb[2], 255];
        }
        if let Some(t) = frame.transparent {
            colours[usize::from(t)] = [0, 0, 0, 0];
        }
        Frame {
            left: u32::from(frame.left),
            top: u32::from(frame.top),
            width: u32::from(frame.width),
            height: u32::from(frame.height),
            interlaced: frame.interlaced,
            colours,
        }
    }
}

/// Decodes a GIF's first frame for `shrink_to` (see [`super::decode`]); returns the pixels
/// and whether they were reduced.
pub(super) fn decode(
    bytes: &[u8],
    shrink_to: &[DecodeBox],
    max_pixels: u64,
) -> Result<(Decoded, bool), DecodeError> {
    let mut decoder = StreamingDecoder::new();
    let mut input = bytes;
    let mut global: Option<Box<[u8]>> = None;
    // Up to the first frame's description.
    let frame = loop {
        let (used, event) = decoder
            .update(input, &mut OutputBuffer::None)
            .map_err(malformed)?;
        input = &input[used..];
        match event {
            Event::GlobalPalette(palette) => global = Some(palette),
            Event::FrameMetadata(_) => {
                break Frame::new(decoder.current_frame(), global.as_deref())
            }
            Event::BlockStart(Block::Trailer) => return Err(malformed("no image in the file")),
            Event::Nothing if input.is_empty() => return Err(malformed("no image in the file")),
            _ => {}
        }
    };
    let screen = (u32::from(decoder.width()), u32::from(decoder.height()));
    let canvas = (
        screen.0.max(frame.left + frame.width),
        screen.1.max(frame.top + frame.height),
    );
    check_pixels(Format::Gif, canvas.0, canvas.1, max_pixels)?;
    let k = factor(
        canvas,
        largest_shown(canvas, shrink_to, Orientation::NoTransforms),
    );
    let mut reducer = Reducer::new(canvas.0, canvas.1, k, !frame.interlaced)?;
    let rows: Box<dyn Iterator<Item = u32>> = if frame.interlaced {
        Box::new(gif_interlaced_rows(frame.height))
    } else {
        Box::new(0..frame.height)
    };
    let mut indexes = vec![0u8; frame.width as usize];
    let mut rgba = vec![0u8; frame.width as usize * 4];
    let mut any = false;
    for y in rows {
        // The row's indexes, as many as arrive: data that ends or breaks early shows what
        // came before it, as browsers show it.
        let mut filled = 0;
        let mut ended = false;
        while filled < indexes.len() && !ended {
            let update = decoder.update(input, &mut OutputBuffer::Slice(&mut indexes[filled..]));
            match update {
                Ok((used, event)) => {
                    input = &input[used..];
                    match event {
                        Event::BytesDecoded(n) => filled += n.get(),
                        Event::DataEnd => ended = true,
                        Event::Nothing if input.is_empty() => ended = true,
                        _ => {}
                    }
                }
                Err(e) if !any && filled == 0 => return Err(malformed(e)),
                Err(_) => ended = true,
            }
        }
        for (px, &i) in rgba.chunks_exact_mut(4).zip(&indexes[..filled]) {
            px.copy_from_slice(&frame.colours[usize::from(i)]);
        }
        reducer.add(
            frame.top + y,
            frame.left,
            1,
            &rgba[..filled * 4],
            Layout::Rgba8,
        );
        any |= filled > 0;
        if ended {
            break;
        }
    }
    Ok((reducer.finish()?, k > 1))
}
