//! Progressive JPEG scans that a shrunken render does not need.
//!
//! A progressive JPEG sends its DCT coefficients in scans: a coarse pass of the DC terms, then
//! bands of AC terms, then more bits of each (successive approximation). Decoding every scan
//! is most of the cost of a progressive file (entropy decoding is about 60% of a cold render,
//! the AC refinement scans half of that), and when the decode is DCT-scaled much of what the
//! later scans carry never reaches the output:
//!
//! - the reduced IDCTs read only some coefficients (1/8 reads the DC term alone, 1/4 reads
//!   rows and columns 0, 1, 3, 5 and 7, 1/2 all but 4): a scan of unread terms changes nothing;
//! - the render then shrinks further; a term whose frequency is well above what the output
//!   can show is all but removed by the resampling filter, and one near it needs only the
//!   coarse value of its first pass, not the refinement bits.
//!
//! [`trim`] reads the scan headers, decides for every coefficient of every component how
//! precisely it is needed ([`Need`], from its frequency in output pixels), keeps the scans
//! that carry something needed, and writes the file again without the others. Dropping only
//! unread terms is exact; the frequency rule is an approximation whose error at the output
//! size is bounded by a test over every progressive JPEG of the corpus (mean absolute error at
//! most [`MAX_MEAN_ERROR`] levels). Anything unexpected in the file (a baseline or lossless
//! frame, arithmetic coding, a scan order that does not check out) means no trimming, never a
//! failure: the caller decodes the original bytes.

use std::ops::Range;

/// The mean absolute error (levels of 255, over every channel of the rendered output) that a
/// trimmed decode may add; checked by the tests on every progressive file of the corpus.
#[cfg(test)]
pub(crate) const MAX_MEAN_ERROR: f64 = 1.0;

/// Natural (row-major) position of each zig-zag index.
const NATURAL_ORDER: [u8; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// Where a term's frequency sits against the output's limit (half a cycle per output pixel)
/// decides how precisely it is needed: below `exact_below` times the limit exactly, from there
/// one low bit fewer for each doubling of the frequency (the resampling filter attenuates a
/// term the more, the higher it is). Dropping terms above the limit altogether was measured
/// too: the bands of real scripts straddle the limit, so it saved nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Policy {
    /// The fraction of the output's limit below which a term must be exact.
    pub exact_below: f64,
}

/// The rule ross decodes with, chosen by measurement (`trim_policy_sweep`, and
/// docs/performance.md).
pub(crate) const POLICY: Policy = Policy { exact_below: 0.5 };

/// Nothing but the terms the IDCT never reads is dropped: the output is exact.
#[cfg(test)]
pub(crate) const EXACT: Policy = Policy {
    exact_below: f64::INFINITY,
};

/// How precisely one coefficient is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// The IDCT does not read it.
    Unread,
    /// Its value without this many low bits is close enough (0: exact).
    Within(u8),
}

/// One frame component: its id and sampling factors.
#[derive(Debug, Clone, Copy)]
struct Component {
    id: u8,
    h: u8,
    v: u8,
}

/// One scan: the byte range of its header and entropy-coded data, and what it carries.
#[derive(Debug, Clone)]
struct Scan {
    bytes: Range<usize>,
    /// Indexes into the frame's components.
    components: Vec<usize>,
    ss: u8,
    se: u8,
    ah: u8,
    al: u8,
}

impl Scan {
    fn is_dc(&self) -> bool {
        self.ss == 0
    }

    fn band(&self) -> Range<usize> {
        usize::from(self.ss)..usize::from(self.se) + 1
    }

    fn overlaps(&self, other: &Scan) -> bool {
        let (a, b) = (self.band(), other.band());
        a.start < b.end && b.start < a.end && self.components == other.components
    }
}

/// The scans of a progressive, Huffman-coded JPEG, or `None` for anything else.
fn parse(bytes: &[u8]) -> Option<(Vec<Component>, Vec<Scan>)> {
    let mut components = Vec::new();
    let mut scans = Vec::new();
    let mut at = 2; // after SOI
    loop {
        // As libjpeg reads: stray bytes before a marker are skipped, fill bytes precede it.
        at = super::jpeg::marker_at(bytes, at)?;
        let marker = *bytes.get(at + 1)?;
        match marker {
            0xD9 => break, // EOI
            0xD0..=0xD7 | 0x01 => {
                at += 2;
                continue;
            }
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([
            *bytes.get(at + 2)?,
            *bytes.get(at + 3)?,
        ]));
        let segment = bytes.get(at + 4..at + 2 + len)?;
        match marker {
            0xC2 => components = frame_components(segment)?,
            // Any other frame type (baseline, lossless, arithmetic coding) is left alone.
            0xC0 | 0xC1 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => return None,
            0xDA => {
                let end = entropy_end(bytes, at + 2 + len);
                scans.push(scan_header(segment, &components, at..end)?);
                if scans.len() > super::jpeg::MAX_SCANS as usize {
                    return None; // libjpeg refuses the file; no need to plan for it
                }
                at = end;
                continue;
            }
            _ => {}
        }
        at += 2 + len;
    }
    (!components.is_empty() && !scans.is_empty()).then_some((components, scans))
}

fn frame_components(sof: &[u8]) -> Option<Vec<Component>> {
    let count = usize::from(*sof.get(5)?);
    (0..count)
        .map(|i| {
            let c = sof.get(6 + 3 * i..9 + 3 * i)?;
            let (h, v) = (c[1] >> 4, c[1] & 0x0F);
            (h > 0 && v > 0).then_some(Component { id: c[0], h, v })
        })
        .collect()
}

fn scan_header(sos: &[u8], components: &[Component], bytes: Range<usize>) -> Option<Scan> {
    let count = usize::from(*sos.first()?);
    let ids = sos.get(1..1 + 2 * count)?;
    let components = ids
        .chunks_exact(2)
        .map(|c| components.iter().position(|k| k.id == c[0]))
        .collect::<Option<Vec<_>>>()?;
    let [ss, se, a] = *sos.get(1 + 2 * count..4 + 2 * count)? else {
        return None;
    };
    let scan = Scan {
        bytes,
        components,
        ss,
        se,
        ah: a >> 4,
        al: a & 0x0F,
    };
    let valid = scan.se <= 63
        && scan.ss <= scan.se
        && (scan.is_dc() == (scan.se == 0))
        && (scan.is_dc() || scan.components.len() == 1)
        && !scan.components.is_empty();
    valid.then_some(scan)
}

/// Where the entropy-coded data starting at `from` ends: at the first marker that is neither
/// a stuffed zero nor a restart marker (or at the end of the bytes).
pub(super) fn entropy_end(bytes: &[u8], from: usize) -> usize {
    let mut at = from;
    while let Some(found) = memchr::memchr(0xFF, &bytes[at.min(bytes.len())..]) {
        let ff = at + found;
        match bytes.get(ff + 1) {
            Some(0x00 | 0xD0..=0xD7) => at = ff + 2,
            Some(0xFF) => at = ff + 1,
            Some(_) => return ff,
            None => return bytes.len(),
        }
    }
    bytes.len()
}

/// The IDCT size (samples per block side) libjpeg gives `component` in a decode at
/// `eighths`/8: subsampled chroma is enlarged by the IDCT rather than upsampled afterwards
/// where the ratios allow (`jdmaster.c`), so at 1/8 the chroma of a 4:2:0 file is read at 2x2.
fn idct_size(component: Component, max: (u8, u8), eighths: u32) -> u32 {
    let divides = |max: u8, sampling: u8, size: u32| {
        (u32::from(max) * eighths).is_multiple_of(u32::from(sampling) * size * 2)
    };
    let mut size = eighths;
    while size < 8 && divides(max.0, component.h, size) && divides(max.1, component.v, size) {
        size *= 2;
    }
    size
}

/// Whether a reduced IDCT of `size` samples reads row or column `i` of a block.
fn idct_reads(size: u32, i: usize) -> bool {
    match size {
        1 => i == 0,
        2 => matches!(i, 0 | 1 | 3 | 5 | 7),
        4 => i != 4,
        _ => true,
    }
}

/// How precisely each coefficient (zig-zag order) of `component` is needed when the image is
/// decoded at `eighths`/8 and then shown at `scale` of its full size (per axis).
fn needs(
    component: Component,
    max: (u8, u8),
    eighths: u32,
    scale: (f64, f64),
    policy: Policy,
) -> [Need; 64] {
    let size = idct_size(component, max, eighths);
    let mut needs = [Need::Unread; 64];
    for (k, need) in needs.iter_mut().enumerate() {
        let natural = usize::from(NATURAL_ORDER[k]);
        let (row, col) = (natural / 8, natural % 8);
        if !(idct_reads(size, row) && idct_reads(size, col)) {
            continue;
        }
        if k == 0 {
            *need = Need::Within(0);
            continue;
        }
        // Term `col` is col/2 cycles over the block's 8 samples; a subsampled component's
        // samples are wider than a pixel. The output shows up to 0.5 cycles per its pixel.
        let cycles_per_pixel = |i: usize, sampling: u8, max: u8, scale: f64| {
            i as f64 / 16.0 * f64::from(sampling) / f64::from(max) / scale
        };
        let across = cycles_per_pixel(col, component.h, max.0, scale.0);
        let down = cycles_per_pixel(row, component.v, max.1, scale.1);
        let of_limit = across.max(down) / 0.5;
        let octaves = (of_limit / policy.exact_below).log2();
        *need = Need::Within(if octaves >= 0.0 {
            1 + octaves.min(13.0) as u8
        } else {
            0
        });
    }
    needs
}

/// Which scans to keep, or `None` if the selection does not check out.
fn select(
    components: &[Component],
    scans: &[Scan],
    eighths: u32,
    scale: (f64, f64),
    policy: Policy,
) -> Option<Vec<bool>> {
    let max = components
        .iter()
        .fold((1, 1), |m, c| (m.0.max(c.h), m.1.max(c.v)));
    let needs: Vec<[Need; 64]> = components
        .iter()
        .map(|&c| needs(c, max, eighths, scale, policy))
        .collect();
    // A first pass is kept if it carries any term that is read, a refinement if it carries a
    // bit that some term needs.
    let mut keep: Vec<bool> = scans
        .iter()
        .map(|scan| {
            scan.is_dc()
                || scan.band().any(|k| match needs[scan.components[0]][k] {
                    Need::Unread => false,
                    Need::Within(bits) => scan.ah == 0 || bits < scan.ah,
                })
        })
        .collect();
    // libjpeg estimates the DC term from the neighbours' when a component has no AC term at
    // all among the first nine (block smoothing); keeping one first pass there keeps DC exact.
    for c in 0..components.len() {
        let first_passes = |keep: &[bool]| {
            scans
                .iter()
                .enumerate()
                .filter(|(i, s)| {
                    !s.is_dc() && s.ah == 0 && s.components == [c] && s.ss <= 9 && keep[*i]
                })
                .count()
        };
        if first_passes(&keep) == 0 {
            if let Some(i) = scans
                .iter()
                .position(|s| !s.is_dc() && s.ah == 0 && s.components == [c] && s.ss <= 9)
            {
                keep[i] = true;
            }
        }
    }
    // A refinement is valid only after every earlier scan of the same terms: keep those too.
    for i in (0..scans.len()).rev() {
        if keep[i] && !scans[i].is_dc() && scans[i].ah > 0 {
            for j in 0..i {
                if scans[j].overlaps(&scans[i]) {
                    keep[j] = true;
                }
            }
        }
    }
    consistent(components.len(), scans, &keep).then_some(keep)
}

/// Replays the kept scans the way libjpeg checks them: a first pass only of terms not seen
/// yet, a refinement only of terms known to exactly the bits it refines.
fn consistent(components: usize, scans: &[Scan], keep: &[bool]) -> bool {
    let mut known = vec![[None::<u8>; 64]; components];
    for scan in scans.iter().zip(keep).filter(|(_, k)| **k).map(|(s, _)| s) {
        for &c in &scan.components {
            for k in scan.band() {
                let bits = &mut known[c][k];
                let expected = if scan.ah == 0 { None } else { Some(scan.ah) };
                if *bits != expected {
                    return false;
                }
                *bits = Some(scan.al);
            }
        }
    }
    true
}

/// `bytes` without the scans that a decode at `eighths`/8, shown at `output` pixels, does not
/// need; `None` when nothing can be dropped (or the file is not one this understands).
pub(crate) fn trim(
    bytes: &[u8],
    full: (u32, u32),
    eighths: u32,
    output: (u32, u32),
    policy: Policy,
) -> Option<Vec<u8>> {
    if eighths >= 8 || full.0 == 0 || full.1 == 0 {
        return None;
    }
    let (components, scans) = parse(bytes)?;
    let scale = (
        f64::from(output.0) / f64::from(full.0),
        f64::from(output.1) / f64::from(full.1),
    );
    let keep = select(&components, &scans, eighths, scale, policy)?;
    if keep.iter().all(|k| *k) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut from = 0;
    for scan in scans
        .iter()
        .zip(&keep)
        .filter(|(_, k)| !**k)
        .map(|(s, _)| s)
    {
        out.extend_from_slice(&bytes[from..scan.bytes.start]);
        from = scan.bytes.end;
    }
    out.extend_from_slice(&bytes[from..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(path: &str) -> Vec<u8> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
        std::fs::read(root.join(path)).unwrap()
    }

    #[test]
    fn reads_the_standard_progressive_script() {
        let (components, scans) = parse(&corpus("photos/Elephants.jpg")).unwrap();
        assert_eq!(components.len(), 3);
        let script: Vec<_> = scans
            .iter()
            .map(|s| (s.components.clone(), s.ss, s.se, s.ah, s.al))
            .collect();
        assert_eq!(
            script,
            vec![
                (vec![0, 1, 2], 0, 0, 0, 1),
                (vec![0], 1, 5, 0, 2),
                (vec![2], 1, 63, 0, 1),
                (vec![1], 1, 63, 0, 1),
                (vec![0], 6, 63, 0, 2),
                (vec![0], 1, 63, 2, 1),
                (vec![0, 1, 2], 0, 0, 1, 0),
                (vec![2], 1, 63, 1, 0),
                (vec![1], 1, 63, 1, 0),
                (vec![0], 1, 63, 1, 0),
            ]
        );
        // Every byte belongs to the headers or to one scan, in order.
        for pair in scans.windows(2) {
            assert!(pair[0].bytes.end <= pair[1].bytes.start);
        }
    }

    #[test]
    fn leaves_other_files_alone() {
        let policy = POLICY;
        for path in ["photos/Dune.jpg", "jpeg-variants/flower_gray.jpg"] {
            assert!(trim(&corpus(path), (1680, 1050), 1, (100, 60), policy).is_none());
        }
        let bytes = corpus("photos/Elephants.jpg");
        assert!(trim(&bytes, (1920, 1080), 8, (1900, 1000), policy).is_none());
        assert!(trim(&bytes[..5000], (1920, 1080), 1, (100, 60), policy).is_none());
        assert!(trim(&[0xFF, 0xD8], (1920, 1080), 1, (100, 60), policy).is_none());
    }

    #[test]
    fn one_eighth_keeps_dc_and_one_first_pass_per_component() {
        let bytes = corpus("photos/Elephants.jpg");
        let (components, scans) = parse(&bytes).unwrap();
        let keep = select(&components, &scans, 1, (0.1, 0.1), POLICY).unwrap();
        assert_eq!(
            keep,
            vec![true, true, true, true, false, false, true, false, false, false]
        );
    }

    #[test]
    fn subsampled_chroma_is_read_at_a_larger_idct() {
        let luma = Component { id: 1, h: 2, v: 2 };
        let chroma = Component { id: 2, h: 1, v: 1 };
        assert_eq!(idct_size(luma, (2, 2), 1), 1);
        assert_eq!(idct_size(chroma, (2, 2), 1), 2);
        assert_eq!(idct_size(chroma, (2, 2), 2), 4);
        assert_eq!(idct_size(chroma, (2, 2), 4), 8);
        // 4:2:2 chroma is upsampled, not enlarged: its vertical factor is the luma's.
        assert_eq!(idct_size(Component { id: 2, h: 1, v: 1 }, (2, 1), 1), 1);
    }

    #[test]
    fn refinements_bring_their_first_passes() {
        // Keeping the luma refinement of 1-63 forces the 6-63 first pass back in.
        let bytes = corpus("photos/Elephants.jpg");
        let (components, scans) = parse(&bytes).unwrap();
        let keep = select(&components, &scans, 4, (0.3, 0.3), EXACT).unwrap();
        assert!(keep.iter().all(|k| *k));
        let mut keep = vec![true; scans.len()];
        keep[4] = false;
        assert!(!consistent(components.len(), &scans, &keep));
    }
}
