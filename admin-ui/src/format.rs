//! Numbers as people read them.

/// `1536` as "1.5 KiB", `0` as "0 B".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// Milliseconds to three significant figures: "0.042 ms", "1.25 ms", "312 ms", "4.1 s".
pub fn ms(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.0} s", value / 1000.0)
    } else if value >= 1000.0 {
        format!("{:.1} s", value / 1000.0)
    } else if value >= 100.0 {
        format!("{value:.0} ms")
    } else if value >= 10.0 {
        format!("{value:.1} ms")
    } else if value >= 1.0 {
        format!("{value:.2} ms")
    } else {
        format!("{value:.3} ms")
    }
}

/// Milliseconds as a bare number to three significant figures: "0.042", "1.25", "312",
/// "4100".
pub fn ms_number(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// Seconds as the two largest units: "45 s", "12 min 5 s", "3 h 20 min", "2 d 4 h".
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, _) if s == 0 => format!("{m} min"),
        (0, 0, _) => format!("{m} min {s} s"),
        (0, _, _) if m == 0 => format!("{h} h"),
        (0, _, _) => format!("{h} h {m} min"),
        _ if h == 0 => format!("{d} d"),
        _ => format!("{d} d {h} h"),
    }
}

/// A setting's value as people read it, judged by its key's unit (`_bytes`, `_ms`,
/// `_pixels`, `cache.max_age` in seconds): `None` when it reads as it is.
pub fn setting(key: &str, value: &str) -> Option<String> {
    let n: u64 = value.parse().ok()?;
    if key.ends_with("_bytes") {
        return (n >= 1024).then(|| bytes(n));
    }
    if key.ends_with("_ms") {
        return Some(if n >= 1000 && n.is_multiple_of(1000) {
            duration(n / 1000)
        } else {
            ms(n as f64)
        });
    }
    if key == "cache.max_age" {
        return Some(duration(n));
    }
    if key.ends_with("_pixels") && n >= 1_000_000 {
        let mp = n as f64 / 1e6;
        return Some(if mp < 10.0 {
            format!("{mp:.1} MP")
        } else {
            format!("{mp:.0} MP")
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(10 << 30), "10 GiB");
        assert_eq!(ms(0.0421), "0.042 ms");
        assert_eq!(ms(1.254), "1.25 ms");
        assert_eq!(ms(312.4), "312 ms");
        assert_eq!(ms(4100.0), "4.1 s");
        assert_eq!(ms_number(4100.0), "4100");
        assert_eq!(ms_number(0.0421), "0.042");
        assert_eq!(setting("cache.max_bytes", "10737418240").unwrap(), "10 GiB");
        assert_eq!(setting("cache.memory_bytes", "0"), None);
        assert_eq!(
            setting("server.header_timeout_ms", "10000").unwrap(),
            "10 s"
        );
        assert_eq!(setting("source.timeout_ms", "2500").unwrap(), "2.5 s");
        assert_eq!(setting("cache.max_age", "2592000").unwrap(), "30 d");
        assert_eq!(
            setting("limits.max_source_pixels", "100000000").unwrap(),
            "100 MP"
        );
        assert_eq!(setting("limits.max_width", "4096"), None);
        assert_eq!(setting("source.root", "\"samples\""), None);
        assert_eq!(duration(45), "45 s");
        assert_eq!(duration(725), "12 min 5 s");
        assert_eq!(duration(900), "15 min");
        assert_eq!(duration(12_000), "3 h 20 min");
        assert_eq!(duration(187_200), "2 d 4 h");
        assert_eq!(duration(7_200), "2 h");
        assert_eq!(duration(604_800), "7 d");
    }
}
