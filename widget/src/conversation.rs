//! The widget's side of conversations kept on the relay (sites that turn transcripts on): the
//! conversation's id, who answers it, the visitor's verdict on an answer, and whether a message
//! asks for a person. The wire contract is `confab_protocol`'s `conversation` module.

use crate::text::Strings;

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
/// [`PERSON_WORDS`](crate::text::PERSON_WORDS), or the words of one of [`PERSON_PHRASES`](crate::text::PERSON_PHRASES) in a row, in any
/// case, in English or the chat's language. In scripts written without spaces (Chinese,
/// Japanese) a word counts wherever it appears.
pub fn wants_person(message: &str, strings: &Strings) -> bool {
    // Lower case and words in any script, by the browser: Rust's Unicode tables for the same
    // would add about 10 KB to the module.
    let message: String = js_sys::JsString::from(message).to_lower_case().into();
    let letters = js_sys::RegExp::new(r"[\p{L}\p{N}]+", "gu");
    let found = js_sys::JsString::from(message.as_str()).match_(&letters);
    let found: Vec<String> = found
        .map(|words| js_sys::Array::from(&words).iter().filter_map(|w| w.as_string()).collect())
        .unwrap_or_default();
    let words: Vec<&str> = found.iter().map(String::as_str).collect();
    let unspaced = |word: &str| word.chars().next().is_some_and(|c| c >= '\u{3040}');
    let (person_words, phrases) = strings.person_words();
    let said = |word: &String| {
        words.contains(&word.as_str()) || (unspaced(word) && message.contains(word.as_str()))
    };
    person_words.iter().any(said)
        || phrases.iter().any(|phrase| match phrase.as_slice() {
            [one] => said(one),
            _ => words
                .windows(phrase.len())
                .any(|w| w.iter().zip(phrase).all(|(a, b)| *a == b.as_str())),
        })
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

    // The locale's words count too (with English's), in any case and script.
    #[cfg(target_family = "wasm")]
    #[wasm_bindgen_test]
    fn requests_for_a_person_are_recognised_in_the_chats_language() {
        let table = js_sys::Object::new();
        let set = |key: &str, value: &str| js_sys::Reflect::set(&table, &key.into(), &value.into());
        let _ = set("person_words", "humano agente человек 人工");
        let _ = set("person_phrases", "hablar con alguien|una persona real");
        let strings = Strings::new(table.into(), Some("es".into()));
        for yes in ["¿Puedo hablar con ALGUIEN?", "Agente", "Человек!", "转人工", "human"]
        {
            assert!(wants_person(yes, &strings), "{yes}");
        }
        for no in ["¿Cuál es la política de devoluciones?", "humanos", "personal", "人"] {
            assert!(!wants_person(no, &strings), "{no}");
        }
    }

    // The browser lowers the case and finds the words: in Chromium only.
    #[cfg(target_family = "wasm")]
    #[wasm_bindgen_test]
    fn requests_for_a_person_are_recognised_in_any_case() {
        for yes in [
            "Can I talk to a HUMAN?",
            "real person please",
            "agent",
            "I want to speak to a representative.",
            "Let me talk to someone",
            "operator!!",
        ] {
            assert!(wants_person(yes, &Strings::default()), "{yes}");
        }
        for no in ["What is your refund policy?", "personal data", "user agents", "humanity", ""] {
            assert!(!wants_person(no, &Strings::default()), "{no}");
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
