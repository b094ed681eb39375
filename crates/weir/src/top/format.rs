//! How `weir top` (and the progress line of `weir run`) write numbers:
//! counts with thousands separators, rates, durations and sizes in
//! readable units.

/// A count, with thousands separators.
pub(crate) fn count(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let n = v.round();
    let digits = format!("{}", n.abs());
    let mut s = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            s.push(',');
        }
        s.push(c);
    }
    if n < 0.0 {
        s.insert(0, '-');
    }
    s
}

/// A rate per second.
pub(super) fn per_sec(v: f64) -> String {
    if v.is_finite() && v.abs() < 100.0 {
        format!("{v:.1}")
    } else {
        count(v)
    }
}

/// A duration in seconds, in a readable unit.
pub(super) fn seconds(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        format!("{v}")
    } else if a == 0.0 {
        "0".to_string()
    } else if a < 1e-3 {
        format!("{:.0} µs", v * 1e6)
    } else if a < 1.0 {
        format!("{:.1} ms", v * 1e3)
    } else if a < 120.0 {
        format!("{v:.2} s")
    } else if a < 7200.0 {
        format!("{:.1} min", v / 60.0)
    } else {
        format!("{:.1} h", v / 3600.0)
    }
}

/// A size in bytes, in binary units.
pub(super) fn bytes(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if v.abs() < 1024.0 {
        return format!("{v:.0} B");
    }
    let mut x = v / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if x.abs() < 1024.0 {
            break;
        }
        x /= 1024.0;
        unit = u;
    }
    format!("{x:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(count(0.0), "0");
        assert_eq!(count(999.0), "999");
        assert_eq!(count(1000.0), "1,000");
        assert_eq!(count(-1234567.0), "-1,234,567");
        assert_eq!(per_sec(12.34), "12.3");
        assert_eq!(per_sec(12345.6), "12,346");
        assert_eq!(seconds(0.000012), "12 µs");
        assert_eq!(seconds(0.0125), "12.5 ms");
        assert_eq!(seconds(1.5), "1.50 s");
        assert_eq!(seconds(600.0), "10.0 min");
        assert_eq!(seconds(36000.0), "10.0 h");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(bytes(3.0 * 1024.0 * 1024.0 * 1024.0), "3.0 GiB");
    }
}
