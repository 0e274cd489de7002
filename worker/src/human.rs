//! Numbers as an operator reads them during an incident: `620547 ms` and
//! `1718000000000` make people do arithmetic under stress, `10 min 20 s` and
//! `2024-06-10T06:13:20Z` do not. The `--json` forms keep the raw numbers
//! for scripts; only the human output goes through here.

/// A duration in the largest units that keep it readable: `850 ms`,
/// `3.2 s`, `5 min 20 s`, `2 h 5 min`, `3 d 4 h`.
pub fn duration_ms(ms: u64) -> String {
    const S: u64 = 1_000;
    const MIN: u64 = 60 * S;
    const H: u64 = 60 * MIN;
    const D: u64 = 24 * H;
    match ms {
        m if m < S => format!("{m} ms"),
        m if m < 10 * S => format!("{:.1} s", m as f64 / S as f64),
        m if m < MIN => format!("{} s", m / S),
        m if m < H => pair(m / MIN, "min", (m % MIN) / S, "s"),
        m if m < D => pair(m / H, "h", (m % H) / MIN, "min"),
        m => pair(m / D, "d", (m % D) / H, "h"),
    }
}

fn pair(major: u64, major_unit: &str, minor: u64, minor_unit: &str) -> String {
    if minor == 0 {
        format!("{major} {major_unit}")
    } else {
        format!("{major} {major_unit} {minor} {minor_unit}")
    }
}

/// Epoch milliseconds as ISO-8601 UTC to the second (`2024-06-10T06:13:20Z`).
/// Zero or negative (an entry that never recorded the time) reads `unknown`.
pub fn utc_ms(epoch_ms: i64) -> String {
    if epoch_ms <= 0 {
        return "unknown".to_owned();
    }
    let secs = epoch_ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`): a date library for one line of output is not worth
/// a dependency.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration_ms(0), "0 ms");
        assert_eq!(duration_ms(850), "850 ms");
        assert_eq!(duration_ms(3_240), "3.2 s");
        assert_eq!(duration_ms(42_000), "42 s");
        assert_eq!(duration_ms(320_000), "5 min 20 s");
        assert_eq!(duration_ms(620_547), "10 min 20 s");
        assert_eq!(duration_ms(3_600_000), "1 h");
        assert_eq!(duration_ms(7_500_000), "2 h 5 min");
        assert_eq!(duration_ms(277_200_000), "3 d 5 h");
    }

    #[test]
    fn times_are_iso_8601_utc() {
        assert_eq!(utc_ms(1), "1970-01-01T00:00:00Z");
        assert_eq!(utc_ms(1_718_000_000_000), "2024-06-10T06:13:20Z");
        assert_eq!(utc_ms(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc_ms(1_735_689_599_999), "2024-12-31T23:59:59Z");
        assert_eq!(utc_ms(0), "unknown");
    }
}
