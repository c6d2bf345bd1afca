//! XEP-0082 dates and times, the one implementation in this crate: UTC
//! `CCYY-MM-DDThh:mm:ss[.fraction]Z` out, and the DateTime profile
//! (`CCYY-MM-DDThh:mm:ss[.fraction](Z|±hh:mm)`) in.
//!
//! Invariants: calendar arithmetic is the proleptic Gregorian calendar
//! over days since 1970-01-01 (Howard Hinnant's civil-date algorithms), so
//! it is exact for every representable year; formatting never fails;
//! parsing returns `None` for anything outside the profile rather than a
//! guess. Times before the epoch parse to 0 (archives hold none).

/// Days since 1970-01-01 to a civil date (year, month, day).
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A civil date to days since 1970-01-01.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `secs` since the epoch as `CCYY-MM-DDThh:mm:ss`, without fraction or zone.
fn date_time(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `YYYY-MM-DDThh:mm:ss.sssZ` for seconds/milliseconds since the Unix epoch.
pub fn xep0082(secs: i64, millis: u32) -> String {
    format!("{}.{millis:03}Z", date_time(secs))
}

/// Now, in XEP-0082 form (milliseconds).
pub fn now_utc() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    xep0082(d.as_secs() as i64, d.subsec_millis())
}

/// XEP-0082 DateTime (UTC, microseconds) of `micros` since the epoch.
pub fn stamp(micros: u64) -> String {
    format!(
        "{}.{:06}Z",
        date_time((micros / 1_000_000) as i64),
        micros % 1_000_000
    )
}

/// Parse an XEP-0082 DateTime (`CCYY-MM-DDThh:mm:ss[.sss](Z|±hh:mm)`) to
/// microseconds since the epoch (fractions beyond microseconds dropped).
pub fn parse_stamp(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) && !t.is_empty() {
            t.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac: u64 = 0;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &s[start..i.min(start + 6)];
        frac = digits.parse().ok()?;
        frac *= 10u64.pow(6 - digits.len() as u32);
    }
    let offset = match &s[i..] {
        "Z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) && &tz[3..4] == ":" => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            let o = oh * 3600 + om * 60;
            if tz.starts_with('-') {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset;
    if secs < 0 {
        return Some(0);
    }
    Some(secs as u64 * 1_000_000 + frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates() {
        assert_eq!(xep0082(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(xep0082(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(xep0082(1_798_761_599, 999), "2026-12-31T23:59:59.999Z");
    }

    #[test]
    fn stamps_round_trip() {
        assert_eq!(stamp(0), "1970-01-01T00:00:00.000000Z");
        let t = 1_704_067_200_123_456;
        assert_eq!(stamp(t), "2024-01-01T00:00:00.123456Z");
        assert_eq!(parse_stamp("2024-01-01T00:00:00.123456Z"), Some(t));
        assert_eq!(
            parse_stamp("2024-01-01T01:00:00+01:00"),
            Some(1_704_067_200_000_000)
        );
        assert_eq!(
            parse_stamp("2024-01-01T00:00:00.5Z"),
            Some(1_704_067_200_500_000)
        );
        assert_eq!(parse_stamp("yesterday"), None);
        assert_eq!(parse_stamp("2024-13-01T00:00:00Z"), None);
    }

    #[test]
    fn days_and_dates_agree() {
        for days in [-719_468, -1, 0, 1, 11_016, 19_723, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }
}
