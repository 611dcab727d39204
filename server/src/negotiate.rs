//! Which of the configured formats a request gets, from its `Accept` header.
//!
//! A format other than JPEG is served only to a client that names it (`image/avif`,
//! `image/webp`) with a quality above zero: `image/*` and `*/*` do not count, because clients
//! that cannot decode WebP or AVIF send them too (Safari before 14 sent `image/*` and no
//! WebP; curl and most libraries send `*/*`). Among the named formats the client's quality
//! values decide, then the order of `output.formats`; JPEG wins when the client rates it
//! (by `image/jpeg`, `image/*` or `*/*`, the most specific) above every named format, and is
//! the answer whenever nothing else fits, even to a client that did not ask for it.

use poem::http::header::ACCEPT;
use poem::http::HeaderMap;
use ross_config::{OutputFormat, Size};

/// The format to serve a render of `size` to a request with `headers`: [`negotiate`] among
/// the `formats` whose encoder can write `size` (WebP stops at 16,383 pixels a side; JPEG,
/// the fallback, fits every size the limits accept).
pub fn negotiate_for(headers: &HeaderMap, formats: &[OutputFormat], size: Size) -> OutputFormat {
    if formats.iter().all(|f| f.fits(size)) {
        return negotiate(headers, formats);
    }
    let fitting: Vec<OutputFormat> = formats.iter().copied().filter(|f| f.fits(size)).collect();
    negotiate(headers, &fitting)
}

/// The format to serve to a request with `headers`, of `formats` (in order of preference,
/// JPEG last).
pub fn negotiate(headers: &HeaderMap, formats: &[OutputFormat]) -> OutputFormat {
    if formats.len() < 2 {
        return OutputFormat::Jpeg;
    }
    let mut values = headers.get_all(ACCEPT).iter();
    let (Some(only), None) = (values.next(), values.next()) else {
        return negotiate_uncached(headers, formats);
    };
    // Browsers send the same few Accept strings on every request: the last answers of this
    // thread are kept, by the header's bytes and the formats they were chosen among.
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        let key = only.as_bytes();
        if let Some(hit) = last
            .iter()
            .find(|m| m.accept == key && m.formats == formats)
        {
            return hit.chosen;
        }
        let chosen = negotiate_uncached(headers, formats);
        if key.len() <= MAX_REMEMBERED_ACCEPT {
            if last.len() == REMEMBERED {
                last.remove(0);
            }
            last.push(Remembered {
                accept: key.to_vec(),
                formats: formats.to_vec(),
                chosen,
            });
        }
        chosen
    })
}

/// An answer of [`negotiate`] kept for the next request with the same header.
struct Remembered {
    accept: Vec<u8>,
    formats: Vec<OutputFormat>,
    chosen: OutputFormat,
}

/// Answers kept per thread, and the longest header kept (a longer one is worked out anew).
const REMEMBERED: usize = 8;
const MAX_REMEMBERED_ACCEPT: usize = 512;

thread_local! {
    static LAST: std::cell::RefCell<Vec<Remembered>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn negotiate_uncached(headers: &HeaderMap, formats: &[OutputFormat]) -> OutputFormat {
    let mut ranges = Vec::new();
    for value in headers.get_all(ACCEPT) {
        if let Ok(text) = value.to_str() {
            ranges.extend(text.split(',').filter_map(MediaRange::parse));
        }
    }
    choose(&ranges, formats)
}

/// One entry of an `Accept` header.
#[derive(Debug, PartialEq)]
struct MediaRange<'a> {
    kind: &'a str,
    subtype: &'a str,
    /// In thousandths, as HTTP writes qualities (at most three decimals).
    q: u16,
}

impl<'a> MediaRange<'a> {
    /// `type/subtype` with its parameters; `None` for an entry that is not one.
    fn parse(entry: &'a str) -> Option<MediaRange<'a>> {
        let mut parts = entry.split(';');
        let (kind, subtype) = parts.next()?.trim().split_once('/')?;
        let (kind, subtype) = (kind.trim(), subtype.trim());
        if kind.is_empty() || subtype.is_empty() || (kind == "*" && subtype != "*") {
            return None;
        }
        let mut q = 1000;
        for param in parts {
            let Some((name, value)) = param.split_once('=') else {
                continue;
            };
            if name.trim().eq_ignore_ascii_case("q") {
                // A quality that is not one makes the whole entry meaningless.
                q = quality(value.trim())?;
            }
        }
        Some(MediaRange { kind, subtype, q })
    }

    /// How specifically this range names `image/<subtype>`: 3 exactly, 2 by `image/*`, 1 by
    /// `*/*`, 0 not at all.
    fn names(&self, subtype: &str) -> u8 {
        let image = self.kind.eq_ignore_ascii_case("image");
        if image && self.subtype.eq_ignore_ascii_case(subtype) {
            3
        } else if image && self.subtype == "*" {
            2
        } else if self.kind == "*" {
            1
        } else {
            0
        }
    }
}

/// An HTTP quality value (`0`, `0.5`, `1.000`...) in thousandths.
fn quality(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{fraction:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The client's quality for `format`: from the most specific range naming it (exact names
/// only, except for JPEG), or `None` if none does.
fn rated(ranges: &[MediaRange<'_>], format: OutputFormat) -> Option<u16> {
    let least = if format == OutputFormat::Jpeg { 1 } else { 3 };
    let specific = ranges.iter().map(|r| r.names(format.as_str())).max()?;
    if specific < least {
        return None;
    }
    ranges
        .iter()
        .filter(|r| r.names(format.as_str()) == specific)
        .map(|r| r.q)
        .max()
}

fn choose(ranges: &[MediaRange<'_>], formats: &[OutputFormat]) -> OutputFormat {
    let jpeg = rated(ranges, OutputFormat::Jpeg).unwrap_or(0);
    let mut best = None;
    for &format in formats.iter().filter(|f| **f != OutputFormat::Jpeg) {
        let q = rated(ranges, format).unwrap_or(0);
        // Strictly better than what came before: ties go to the operator's order.
        if q > 0 && q >= jpeg && best.is_none_or(|(_, b)| q > b) {
            best = Some((format, q));
        }
    }
    best.map_or(OutputFormat::Jpeg, |(format, _)| format)
}

#[cfg(test)]
mod tests {
    use poem::http::HeaderValue;

    use super::*;
    use OutputFormat::{Avif, Jpeg, Webp};

    const ALL: [OutputFormat; 3] = [Avif, Webp, Jpeg];

    fn pick(accept: Option<&str>, formats: &[OutputFormat]) -> OutputFormat {
        let mut headers = HeaderMap::new();
        if let Some(a) = accept {
            headers.insert(ACCEPT, HeaderValue::from_str(a).unwrap());
        }
        negotiate(&headers, formats)
    }

    #[test]
    fn browsers_get_what_they_name() {
        let chromium = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";
        let firefox = "image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5";
        let safari = "image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,\
                      video/*;q=0.8,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5";
        let old_safari = "image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5";
        for (accept, want) in [
            (chromium, Avif),
            (firefox, Avif),
            (safari, Avif),
            (old_safari, Jpeg),
        ] {
            assert_eq!(pick(Some(accept), &ALL), want, "{accept}");
            assert_eq!(
                pick(Some(accept), &[Webp, Jpeg]),
                if want == Jpeg { Jpeg } else { Webp }
            );
            assert_eq!(pick(Some(accept), &[Jpeg]), Jpeg);
        }
    }

    #[test]
    fn wildcards_none_and_refusals() {
        assert_eq!(pick(Some("*/*"), &ALL), Jpeg);
        assert_eq!(pick(Some("image/*"), &ALL), Jpeg);
        assert_eq!(pick(None, &ALL), Jpeg);
        assert_eq!(pick(Some(""), &ALL), Jpeg);
        assert_eq!(pick(Some("image/jpeg"), &ALL), Jpeg);
        assert_eq!(
            pick(Some("image/avif;q=0,image/webp,*/*;q=0.8"), &ALL),
            Webp
        );
        assert_eq!(pick(Some("image/avif;q=0, image/webp;q=0"), &ALL), Jpeg);
        assert_eq!(pick(Some("image/webp,*/*;q=0.8"), &ALL), Webp);
        // Only a named format counts; nothing fits: JPEG all the same.
        assert_eq!(pick(Some("image/png"), &ALL), Jpeg);
        assert_eq!(pick(Some("image/avif"), &[Webp, Jpeg]), Jpeg);
    }

    #[test]
    fn qualities_are_honoured() {
        // The client prefers WebP: it gets WebP although the operator prefers AVIF.
        assert_eq!(pick(Some("image/webp;q=0.9,image/avif;q=0.5"), &ALL), Webp);
        // Equal: the operator's order.
        assert_eq!(pick(Some("image/webp;q=0.5,image/avif;q=0.5"), &ALL), Avif);
        // JPEG rated above both.
        assert_eq!(pick(Some("image/jpeg,image/webp;q=0.5"), &ALL), Jpeg);
        // Case, spaces and other parameters.
        assert_eq!(
            pick(Some("IMAGE/WEBP ; Q=0.7 ; x=y , */*;q=0.1"), &ALL),
            Webp
        );
        // A malformed quality makes its entry void, not the header.
        assert_eq!(pick(Some("image/avif;q=2,image/webp"), &ALL), Webp);
        assert_eq!(
            pick(Some("image/avif;q=0.1234,image/webp;q=abc"), &ALL),
            Jpeg
        );
        // Several Accept headers are one list.
        let mut headers = HeaderMap::new();
        headers.append(ACCEPT, HeaderValue::from_static("image/avif;q=0"));
        headers.append(ACCEPT, HeaderValue::from_static("image/webp"));
        assert_eq!(negotiate(&headers, &ALL), Webp);
    }

    /// The answers kept per thread are the ones worked out anew, for the same header with
    /// other formats too, and after more distinct headers than are kept.
    #[test]
    fn remembered_answers_are_the_computed_ones() {
        let headers = |a: &str| {
            let mut h = HeaderMap::new();
            h.insert(ACCEPT, HeaderValue::from_str(a).unwrap());
            h
        };
        let accepts: Vec<String> = (0..20)
            .map(|i| format!("image/webp;q=0.{i},image/avif;q=0.{},*/*", 19 - i))
            .chain(["image/avif,image/webp,*/*;q=0.8".to_owned()])
            .collect();
        for _ in 0..3 {
            for a in &accepts {
                for formats in [&ALL[..], &[Webp, Jpeg], &[Avif, Jpeg], &[Jpeg]] {
                    let h = headers(a);
                    let want = if formats.len() < 2 {
                        Jpeg
                    } else {
                        negotiate_uncached(&h, formats)
                    };
                    assert_eq!(negotiate(&h, formats), want, "{a} {formats:?}");
                }
            }
        }
    }

    #[test]
    fn quality_values_parse_as_http_writes_them() {
        assert_eq!(quality("1"), Some(1000));
        assert_eq!(quality("1.000"), Some(1000));
        assert_eq!(quality("0.8"), Some(800));
        assert_eq!(quality("0.05"), Some(50));
        assert_eq!(quality("0"), Some(0));
        for bad in ["1.5", "2", "0.1234", "-0.1", "", "x"] {
            assert_eq!(quality(bad), None, "{bad}");
        }
    }
}
