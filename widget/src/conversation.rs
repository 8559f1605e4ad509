//! The widget's side of conversations kept on the relay (sites that turn transcripts on): the
//! conversation's id, who answers it, the visitor's verdict on an answer, and whether a message
//! asks for a person. The wire contract is `confab_protocol`'s `conversation` module.

use crate::text;

/// Who answers the conversation, as the relay names it (`HolderEvent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Holder {
    /// The model (the usual case).
    #[default]
    Bot,
    /// The visitor asked for a person, who has not replied yet.
    Waiting,
    /// A person holds the conversation until they hand it back.
    Person,
}

impl Holder {
    pub fn as_str(self) -> &'static str {
        match self {
            Holder::Bot => "bot",
            Holder::Waiting => "waiting",
            Holder::Person => "person",
        }
    }

    pub fn from_name(name: &str) -> Option<Holder> {
        [Holder::Bot, Holder::Waiting, Holder::Person].into_iter().find(|h| h.as_str() == name)
    }
}

/// A visitor's verdict on an answer (`FeedbackRequest.rating`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rating {
    Up,
    Down,
}

impl Rating {
    pub fn as_str(self) -> &'static str {
        match self {
            Rating::Up => "up",
            Rating::Down => "down",
        }
    }

    pub fn from_name(name: &str) -> Option<Rating> {
        [Rating::Up, Rating::Down].into_iter().find(|r| r.as_str() == name)
    }
}

/// The longest comment sent with a verdict, in characters.
pub const MAX_COMMENT_CHARS: usize = 500;
/// The longest page URL sent in `X-Confab-Page`, in bytes.
pub const MAX_PAGE_BYTES: usize = 2048;

/// A new conversation id: `c_` and 32 hex digits of the browser's cryptographic randomness
/// (128 bits: whoever knows the id can read a person's replies). `None` without `crypto`.
pub fn new_id() -> Option<String> {
    let mut bytes = [0u8; 16];
    web_sys::window()?.crypto().ok()?.get_random_values_with_u8_array(&mut bytes).ok()?;
    Some(id_from(&bytes))
}

/// The id made of these random bytes.
fn id_from(bytes: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(34);
    id.push_str("c_");
    for byte in bytes {
        id.push(char::from(HEX[usize::from(byte >> 4)]));
        id.push(char::from(HEX[usize::from(byte & 15)]));
    }
    id
}

/// The page's URL for `X-Confab-Page`, cut to [`MAX_PAGE_BYTES`] (at a character boundary:
/// `location.href` is percent-encoded ASCII, but a header must never be cut inside a character).
pub fn page_url() -> String {
    let href = web_sys::window().and_then(|w| w.location().href().ok()).unwrap_or_default();
    truncate(&href, MAX_PAGE_BYTES).to_owned()
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `comment` cut to [`MAX_COMMENT_CHARS`] characters.
pub fn comment(comment: &str) -> &str {
    let end = comment.char_indices().nth(MAX_COMMENT_CHARS).map_or(comment.len(), |(i, _)| i);
    &comment[..end]
}

/// Whether `message` looks like a request for a person ("can I talk to a human?"): one of
/// [`text::PERSON_WORDS`], or the words of one of [`text::PERSON_PHRASES`] in a row, in any
/// case.
pub fn wants_person(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    let words: Vec<&str> =
        message.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
    words.iter().any(|word| text::PERSON_WORDS.contains(word))
        || text::PERSON_PHRASES
            .iter()
            .any(|phrase| words.windows(phrase.len()).any(|w| w == *phrase))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn an_id_is_128_bits_in_hex_that_the_relay_accepts() {
        let id = id_from(&[0xab; 16]);
        assert_eq!(id, format!("c_{}", "ab".repeat(16)));
        assert!(confab_protocol::is_conversation_id(&id));
        assert!(confab_protocol::is_conversation_id(&id_from(&[0; 16])));
    }

    // The browser's `crypto`: in headless Chromium only.
    #[cfg(target_family = "wasm")]
    #[wasm_bindgen_test]
    fn the_browser_makes_a_new_random_id_each_time() {
        let ids: Vec<String> = (0..8).filter_map(|_| new_id()).collect();
        assert_eq!(ids.len(), 8);
        for id in &ids {
            assert!(confab_protocol::is_conversation_id(id), "{id}");
            assert_eq!(id.len(), 34);
        }
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len());
        assert!(page_url().starts_with("http"), "{}", page_url());
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn requests_for_a_person_are_recognised_in_any_case() {
        for yes in [
            "Can I talk to a HUMAN?",
            "real person please",
            "agent",
            "I want to speak to a representative.",
            "Let me talk to someone",
            "operator!!",
        ] {
            assert!(wants_person(yes), "{yes}");
        }
        for no in ["What is your refund policy?", "personal data", "user agents", "humanity", ""] {
            assert!(!wants_person(no), "{no}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn long_texts_are_cut_at_character_boundaries() {
        assert_eq!(truncate("abc", 2), "ab");
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(comment(&"é".repeat(600)).chars().count(), MAX_COMMENT_CHARS);
        assert_eq!(comment("short"), "short");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn holders_and_ratings_have_the_relays_names() {
        for holder in [Holder::Bot, Holder::Waiting, Holder::Person] {
            assert_eq!(Holder::from_name(holder.as_str()), Some(holder));
        }
        assert_eq!(Holder::from_name("nobody"), None);
        assert_eq!(Rating::from_name("down"), Some(Rating::Down));
        assert_eq!(Rating::from_name("meh"), None);
    }
}
