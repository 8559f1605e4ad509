//! Masking of contact details in stored transcripts (a site's `mask_contacts`): e-mail
//! addresses become `[email]` and phone numbers `[phone]`, before anything is written.
//!
//! A phone number is a run of digits with the separators people write (spaces, dots, dashes,
//! parentheses, a leading `+`) holding 9 to 15 digits (E.164's longest), or 7 or more after a
//! `+`. Shorter runs (prices, years, order numbers, dates written `2026-12-03` have 8 digits)
//! are kept: masking is meant to remove what identifies a visitor, not every number.

use std::sync::LazyLock;

use regex::{Captures, Regex};

#[expect(clippy::expect_used, reason = "a constant pattern, checked by the tests")]
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)[a-z0-9._%+\-]+@[a-z0-9\-]+(?:\.[a-z0-9\-]+)*\.[a-z]{2,}")
        .expect("the e-mail pattern compiles")
});

#[expect(clippy::expect_used, reason = "a constant pattern, checked by the tests")]
static PHONE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\+?\(?\d[\d\s().\-]{5,}\d").expect("the phone pattern compiles"));

/// `text` with e-mail addresses and phone numbers replaced.
pub fn mask_contacts(text: &str) -> String {
    let text = EMAIL.replace_all(text, "[email]");
    PHONE
        .replace_all(&text, |found: &Captures<'_>| {
            let run = &found[0];
            let digits = run.bytes().filter(u8::is_ascii_digit).count();
            let international = run.starts_with('+') && digits >= 7;
            if international || (9..=15).contains(&digits) {
                "[phone]".to_owned()
            } else {
                run.to_owned()
            }
        })
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::mask_contacts;

    #[test]
    fn addresses_and_phone_numbers_are_masked() {
        assert_eq!(
            mask_contacts("write to ana.lopez+shop@mail.example.co.uk!"),
            "write to [email]!"
        );
        assert_eq!(
            mask_contacts("call +34 612 345 678 or (555) 123-4567"),
            "call [phone] or [phone]"
        );
        assert_eq!(mask_contacts("my number is 0612345678."), "my number is [phone].");
        assert_eq!(mask_contacts("+49 30 1234567"), "[phone]");
    }

    #[test]
    fn ordinary_numbers_are_kept() {
        let kept = "Order 12345 cost 1299.00 on 2026-12-03, size 42, 10 items";
        assert_eq!(mask_contacts(kept), kept);
        assert_eq!(mask_contacts("no contacts here"), "no contacts here");
    }
}
