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
        (0, _, _) => format!("{h} h {m} min"),
        _ => format!("{d} d {h} h"),
    }
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
        assert_eq!(duration(45), "45 s");
        assert_eq!(duration(725), "12 min 5 s");
        assert_eq!(duration(900), "15 min");
        assert_eq!(duration(12_000), "3 h 20 min");
        assert_eq!(duration(187_200), "2 d 4 h");
    }
}
