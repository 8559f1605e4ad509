//! What the operator types, read: lists (origins, models, suggestions), whole numbers, dollars
//! (sent as micro-dollars), colours, and which field a relay's error names. Pure functions,
//! tested natively; each error is a sentence to show next to its field.

/// Items separated by new lines or commas, trimmed, the empty ones left out (origins, models).
pub fn list(text: &str) -> Vec<String> {
    text.split([',', '\n']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// One item per line, trimmed, the empty ones left out (suggestions may hold commas).
pub fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// `None` for an empty field, `Some(text)` trimmed otherwise.
pub fn optional(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// A limit: empty is none; otherwise a whole number of at least 1.
pub fn limit<T: TryFrom<u64>>(text: &str) -> Result<Option<T>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let n = text
        .parse::<u64>()
        .map_err(|_| "Enter a whole number, or leave it empty for no limit.".to_owned())?;
    if n == 0 {
        return Err("Enter at least 1, or leave it empty for no limit.".into());
    }
    T::try_from(n).map(Some).map_err(|_| "That number is too large.".into())
}

/// Dollars (`12`, `12.5`, `$0.000001`; at most six decimals) as micro-dollars; empty is none.
pub fn dollars_to_micros(text: &str) -> Result<Option<u64>, String> {
    let text = text.trim();
    let text = text.strip_prefix('$').unwrap_or(text).trim();
    if text.is_empty() {
        return Ok(None);
    }
    let invalid = || "Enter an amount in dollars, like 25 or 0.50.".to_owned();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return Err(invalid());
    }
    if fraction.len() > 6 {
        return Err("Dollars have at most six decimals (one micro-dollar).".into());
    }
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| invalid())? };
    let fraction: u64 = format!("{fraction:0<6}").parse().map_err(|_| invalid())?;
    let micros = whole
        .checked_mul(1_000_000)
        .and_then(|m| m.checked_add(fraction))
        .ok_or_else(|| "That amount is too large.".to_owned())?;
    if micros == 0 {
        return Err("Enter more than $0, or leave it empty for no budget.".into());
    }
    Ok(Some(micros))
}

/// Micro-dollars as a field shows them: `12.5`, `0.000001`, `3`.
pub fn micros_to_dollars(micros: u64) -> String {
    let whole = micros / 1_000_000;
    let fraction = format!("{:06}", micros % 1_000_000);
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() { whole.to_string() } else { format!("{whole}.{fraction}") }
}

/// `#rgb` or `#rrggbb`, as the relay accepts a widget's colour.
pub fn is_color(text: &str) -> bool {
    let Some(hex) = text.trim().strip_prefix('#') else { return false };
    matches!(hex.len(), 3 | 6) && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The field a relay's validation error names (`"primary_color: must be ..."`), if any.
pub fn error_field(message: &str) -> Option<&str> {
    let (field, _) = message.split_once(": ")?;
    let field = field.rsplit('.').next().unwrap_or(field);
    let is_name = !field.is_empty() && field.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    is_name.then_some(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_split_on_lines_and_commas() {
        assert_eq!(
            list(" https://a.example,https://b.example\n\n https://c.example \n,"),
            ["https://a.example", "https://b.example", "https://c.example"]
        );
        assert!(list(" \n , ").is_empty());
        assert_eq!(
            lines("Where is my order?\n  Prices, please \n"),
            ["Where is my order?", "Prices, please"]
        );
    }

    #[test]
    fn dollars_become_micro_dollars_exactly() {
        assert_eq!(dollars_to_micros(""), Ok(None));
        assert_eq!(dollars_to_micros("25"), Ok(Some(25_000_000)));
        assert_eq!(dollars_to_micros("$0.50"), Ok(Some(500_000)));
        assert_eq!(dollars_to_micros(" 12.345678 "), Ok(Some(12_345_678)));
        assert_eq!(dollars_to_micros(".5"), Ok(Some(500_000)));
        assert_eq!(dollars_to_micros("0.000001"), Ok(Some(1)));
        assert!(dollars_to_micros("0.0000001").is_err());
        assert!(dollars_to_micros("-1").is_err());
        assert!(dollars_to_micros("1,000").is_err());
        assert!(dollars_to_micros("0").is_err());
        assert!(dollars_to_micros(".").is_err());
        assert!(dollars_to_micros("99999999999999999999").is_err());
        assert_eq!(micros_to_dollars(12_500_000), "12.5");
        assert_eq!(micros_to_dollars(1), "0.000001");
        assert_eq!(micros_to_dollars(3_000_000), "3");
    }

    #[test]
    fn limits_are_whole_numbers_of_at_least_one() {
        assert_eq!(limit::<u32>(" 60 "), Ok(Some(60)));
        assert_eq!(limit::<u32>(""), Ok(None));
        assert!(limit::<u32>("0").is_err());
        assert!(limit::<u32>("1.5").is_err());
        assert!(limit::<u32>("5000000000").is_err());
    }

    #[test]
    fn colours_and_error_fields_are_recognised() {
        assert!(is_color("#1a73e8") && is_color("#17E"));
        assert!(!is_color("blue") && !is_color("#12345") && !is_color("1a73e8"));
        assert_eq!(error_field("primary_color: must be a colour"), Some("primary_color"));
        assert_eq!(error_field("limits.rpm: must be at least 1"), Some("rpm"));
        assert_eq!(error_field("The relay answered 502."), None);
    }
}
