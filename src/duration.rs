//! Durations as people write them, one syntax for flags (`--duration 1h30m`)
//! and workload parameters (`--param duration_s=1h30m`): humantime's
//! (`90s`, `2m`, `1h30m`, `1h 30m`, `500ms`), and a plain number is seconds,
//! as a parameter named `…_s` promises.

use std::time::Duration;

/// Reads a duration; the error is one line quoting the text and showing
/// the syntax (clap prefixes it with the flag, workloads with the parameter).
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let parsed = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<u64>().ok().map(Duration::from_secs)
    } else {
        humantime::parse_duration(text).ok()
    };
    parsed.ok_or_else(|| format!("`{text}` is not a duration (write it like 90, 90s, 2m or 1h30m)"))
}

/// Reads a duration of whole seconds, for programs that take seconds.
pub fn parse_whole_s(text: &str) -> Result<u64, String> {
    let duration = parse(text)?;
    if duration.subsec_nanos() != 0 {
        return Err(format!(
            "`{}` is not a whole number of seconds",
            text.trim()
        ));
    }
    Ok(duration.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_numbers_are_seconds_and_units_follow_humantime() {
        for (text, s) in [
            ("90", 90),
            (" 90 ", 90),
            ("0", 0),
            ("90s", 90),
            ("2m", 120),
            ("1h30m", 5400),
            ("1h 30m", 5400),
            ("2d", 172_800),
        ] {
            assert_eq!(parse(text), Ok(Duration::from_secs(s)), "{text}");
        }
        assert_eq!(parse("1500ms"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn bad_text_is_one_line_quoting_it() {
        for bad in ["", "soon", "-5", "1.5", "5 parsecs", "99999999999999999999"] {
            assert_eq!(
                parse(bad),
                Err(format!(
                    "`{}` is not a duration (write it like 90, 90s, 2m or 1h30m)",
                    bad.trim()
                )),
                "{bad}"
            );
        }
    }

    #[test]
    fn whole_seconds_refuse_fractions() {
        assert_eq!(parse_whole_s("1h30m"), Ok(5400));
        assert_eq!(
            parse_whole_s("1500ms"),
            Err("`1500ms` is not a whole number of seconds".into())
        );
        assert_eq!(parse_whole_s("2s 1000ms"), Ok(3));
    }
}
