//! Timestamps of result rows. Run directories and their files: [`crate::rundir`].

use std::time::SystemTime;

/// RFC 3339 UTC with milliseconds, for CSV rows.
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        assert_eq!(
            timestamp(UNIX_EPOCH + Duration::from_millis(1500)),
            "1970-01-01T00:00:01.500Z"
        );
    }
}
