//! The sizes of modes asked for lately: a shop's pages ask for a few of them (72x72 and
//! 300x300 crops for listings, a 1024x768 resize for the product page), whatever the whitelist
//! allows. An original is decoded once for the largest of them, so that its next sizes reuse
//! that decode (and its reduced copy): decoding for every mode at every whitelisted size would
//! cover a 1024x768 crop no page asks for, and make decodes and copies twice as large.
//!
//! A shape is noted at each miss and forgotten a day after it was last asked for. Until a shape
//! is asked for, decodes are not made for it; the first original asked for at a new shape is
//! decoded again for it (its copy is then replaced by a larger one).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ross_config::Size;

use crate::render::Shape;
use crate::whitelist::Allowed;

/// How long a shape no one asks for is still decoded for.
pub const KEPT_FOR: Duration = Duration::from_secs(24 * 60 * 60);

/// Shapes remembered at most (the whitelist's sizes times the modes bound them already).
const MAX_SHAPES: usize = 4096;

/// The shapes asked for lately, with when each was last asked for.
#[derive(Debug, Default)]
pub struct Shapes {
    seen: Mutex<HashMap<Shape, Instant>>,
}

impl Shapes {
    /// Notes that `mode` was asked for at `width` x `height` now.
    pub fn note(&self, mode: &str, width: u32, height: u32) {
        self.note_at(mode, width, height, Instant::now());
    }

    fn note_at(&self, mode: &str, width: u32, height: u32, now: Instant) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let shape = Shape {
            mode: mode.to_owned(),
            width,
            height,
        };
        if let Some(at) = seen.get_mut(&shape) {
            *at = now;
            return;
        }
        if seen.len() >= MAX_SHAPES {
            seen.retain(|_, at| now.saturating_duration_since(*at) < KEPT_FOR);
            if seen.len() >= MAX_SHAPES {
                let oldest = seen
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(s, _)| s.clone());
                if let Some(oldest) = oldest {
                    seen.remove(&oldest);
                }
            }
        }
        seen.insert(shape, now);
    }

    /// The shapes asked for within [`KEPT_FOR`] that `allowed` still allows, in a stable
    /// order; none with the whitelist off (any size may be asked for: a decode is made for
    /// its own request only).
    pub fn current(&self, allowed: &Allowed) -> Vec<Shape> {
        self.current_at(allowed, Instant::now())
    }

    fn current_at(&self, allowed: &Allowed, now: Instant) -> Vec<Shape> {
        if !allowed.enabled {
            return Vec::new();
        }
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut shapes: Vec<Shape> = seen
            .iter()
            .filter(|(shape, at)| {
                now.saturating_duration_since(**at) < KEPT_FOR
                    && allowed.sizes.contains(&Size {
                        width: shape.width,
                        height: shape.height,
                    })
            })
            .map(|(shape, _)| shape.clone())
            .collect();
        shapes.sort_by(|a, b| (&a.mode, a.width, a.height).cmp(&(&b.mode, b.width, b.height)));
        shapes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(sizes: &[(u32, u32)]) -> Allowed {
        Allowed {
            enabled: true,
            sizes: sizes
                .iter()
                .map(|&(width, height)| Size { width, height })
                .collect(),
        }
    }

    #[test]
    fn shapes_are_those_asked_for_lately_that_the_whitelist_allows() {
        let shapes = Shapes::default();
        let t0 = Instant::now();
        shapes.note_at("crop", 300, 300, t0);
        shapes.note_at("resize", 1024, 768, t0);
        shapes.note_at("crop", 300, 300, t0);
        let both = allowed(&[(300, 300), (1024, 768)]);
        let names = |v: Vec<Shape>| {
            v.iter()
                .map(|s| format!("{}/{}x{}", s.mode, s.width, s.height))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(shapes.current_at(&both, t0)),
            ["crop/300x300", "resize/1024x768"]
        );
        // A size taken off the whitelist is no longer decoded for.
        assert_eq!(
            names(shapes.current_at(&allowed(&[(300, 300)]), t0)),
            ["crop/300x300"]
        );
        // With the whitelist off, none.
        let off = Allowed {
            enabled: false,
            sizes: Default::default(),
        };
        assert!(shapes.current_at(&off, t0).is_empty());
        // A day after it was last asked for, a shape is forgotten; asked again, it is back.
        let later = t0 + KEPT_FOR + Duration::from_secs(1);
        shapes.note_at("crop", 300, 300, later - Duration::from_secs(10));
        assert_eq!(names(shapes.current_at(&both, later)), ["crop/300x300"]);
    }

    #[test]
    fn shapes_are_bounded() {
        let shapes = Shapes::default();
        let t0 = Instant::now();
        for i in 0..MAX_SHAPES as u32 + 10 {
            shapes.note_at("crop", i + 1, 1, t0 + Duration::from_millis(u64::from(i)));
        }
        let seen = shapes.seen.lock().unwrap();
        assert_eq!(seen.len(), MAX_SHAPES);
        // The oldest went first.
        assert!(!seen.contains_key(&Shape {
            mode: "crop".into(),
            width: 1,
            height: 1
        }));
    }
}
