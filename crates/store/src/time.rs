//! The clock, as the stored rows and the messages about them use it.

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// Unix seconds as an RFC 3339 UTC timestamp, like `2026-11-24T03:40:00Z`.
pub fn rfc3339(unix: i64) -> String {
    let time =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}
