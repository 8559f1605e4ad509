//! Values from clients in log lines: a model name or a rejected body's snippet must never forge
//! a log line (a newline and a fake `INFO` after it) or hide text from the reader (a carriage
//! return, escape sequences). [`Escaped`] writes a string with its control characters escaped.

use std::fmt;

/// Displays a client's string with control characters (newlines, escapes, NUL, DEL, C1) escaped
/// as `\n`, `\u{1b}` and so on; everything else as it is.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(char::is_control) {
            f.write_str(&rest[..at])?;
            let mut chars = rest[at..].chars();
            if let Some(c) = chars.next() {
                for escaped in c.escape_default() {
                    fmt::Write::write_char(f, escaped)?;
                }
            }
            rest = chars.as_str();
        }
        f.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::Escaped;

    #[test]
    fn control_characters_are_escaped_and_the_rest_is_kept() {
        let forged = "gpt\n2026-12-02T00:00:00Z  INFO admin login ok\r\u{1b}[2J\u{0}ü";
        assert_eq!(
            Escaped(forged).to_string(),
            "gpt\\n2026-12-02T00:00:00Z  INFO admin login ok\\r\\u{1b}[2J\\u{0}ü"
        );
        assert_eq!(Escaped("plain text").to_string(), "plain text");
    }
}
