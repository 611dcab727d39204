//! Size arithmetic shared by modes and the host: fitting inside a box, covering a box, and
//! centring. Pure functions on integers, so every mode rounds the same way.

/// A rectangle in source pixels; fractional so a centred crop stays exactly centred.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    /// Left edge.
    pub left: f64,
    /// Top edge.
    pub top: f64,
    /// Width.
    pub width: f64,
    /// Height.
    pub height: f64,
}

/// The size of `src` scaled to fit inside `target` with its aspect ratio kept: one side equals
/// the box, the other is rounded to the nearest pixel (at least 1). Enlarges small sources.
pub fn fit(src: (u32, u32), target: (u32, u32)) -> (u32, u32) {
    let (sw, sh) = (u64::from(src.0.max(1)), u64::from(src.1.max(1)));
    let (tw, th) = (u64::from(target.0), u64::from(target.1));
    // Compare tw/sw with th/sh without floating point.
    if tw * sh <= th * sw {
        let h = (sh * tw + sw / 2) / sw;
        (target.0, h.clamp(1, th) as u32)
    } else {
        let w = (sw * th + sh / 2) / sh;
        (w.clamp(1, tw) as u32, target.1)
    }
}

/// The part of `src` that, scaled to `target`, covers it exactly with the aspect ratio kept:
/// the source scaled to cover the box, with the box placed at a whole-pixel offset rounded
/// down (as `resizecomp` places its picture, and as OpenRoss's crop did).
pub fn cover_region(src: (u32, u32), target: (u32, u32)) -> Region {
    let (sw, sh) = (f64::from(src.0), f64::from(src.1));
    let (tw, th) = (f64::from(target.0), f64::from(target.1));
    let scale = (tw / sw).max(th / sh);
    let (width, height) = ((tw / scale).min(sw), (th / scale).min(sh));
    let offset = |scaled: f64, boxed: f64| ((scaled.round().max(boxed) - boxed) / 2.0).floor();
    Region {
        left: (offset(sw * scale, tw) / scale).min(sw - width),
        top: (offset(sh * scale, th) / scale).min(sh - height),
        width,
        height,
    }
}

/// The smallest size, with `src`'s aspect ratio, that covers `target` on both sides. Decoders
/// may shrink a source this far without losing anything any mode needs.
pub fn cover(src: (u32, u32), target: (u32, u32)) -> (u32, u32) {
    let (sw, sh) = (u64::from(src.0.max(1)), u64::from(src.1.max(1)));
    let (tw, th) = (u64::from(target.0), u64::from(target.1));
    if tw * sh >= th * sw {
        (target.0, sh.saturating_mul(tw).div_ceil(sw).max(1) as u32)
    } else {
        (sw.saturating_mul(th).div_ceil(sh).max(1) as u32, target.1)
    }
}

/// Offset that centres `inner` in `outer`, rounded down: a spare pixel goes right or bottom.
pub fn centre(outer: u32, inner: u32) -> u32 {
    outer.saturating_sub(inner) / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_matches_openross() {
        // OpenRoss's golden: 1440x1086 into 200x200 is 200x151.
        assert_eq!(fit((1440, 1086), (200, 200)), (200, 151));
        assert_eq!(fit((1086, 1440), (200, 200)), (151, 200));
        assert_eq!(fit((100, 50), (400, 400)), (400, 200), "enlarges");
        assert_eq!(fit((10_000, 1), (100, 100)), (100, 1), "never zero");
        assert_eq!(fit((300, 300), (400, 100)), (100, 100));
    }

    #[test]
    fn cover_region_is_centred_with_target_aspect() {
        let r = cover_region((1440, 1086), (400, 100));
        assert_eq!((r.width, r.height), (1440.0, 360.0));
        // 1086 rows scale to 302; the box starts 101 scaled rows down.
        assert_eq!(r.left, 0.0);
        assert!((r.top - 101.0 * 1440.0 / 400.0).abs() < 1e-9, "{}", r.top);
        let r = cover_region((1000, 500), (100, 400));
        assert_eq!((r.width, r.height), (125.0, 500.0));
        assert_eq!(r.left, 437.5);
    }

    #[test]
    fn cover_covers_both_sides() {
        assert_eq!(cover((2560, 1920), (300, 300)), (400, 300));
        assert_eq!(cover((1920, 2560), (300, 300)), (300, 400));
        assert_eq!(cover((1000, 1000), (400, 100)), (400, 400));
    }

    #[test]
    fn centre_rounds_down() {
        assert_eq!(centre(200, 151), 24);
        assert_eq!(centre(10, 10), 0);
    }
}
