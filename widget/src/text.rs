//! Every text the widget shows or announces to visitors, in one place: each with its key in
//! the locale files (`widget/locales/<language>.json`) and its English text, which needs no file.
//! A chat's [`Strings`] are the chosen language's, with the site's own overrides on top, from
//! the `strings` mount option; a key it lacks is shown in English. Texts that carry a number
//! mark it `{n}`.

use js_sys::{Array, Object, Reflect};
use wasm_bindgen::{JsCast, JsValue};

/// A text the widget shows: its key in a locale file and its English text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Text {
    pub key: &'static str,
    pub en: &'static str,
}

const fn text(key: &'static str, en: &'static str) -> Text {
    Text { key, en }
}

/// The panel's title when neither the page nor the site names it.
pub const DEFAULT_TITLE: Text = text("default_title", "Chat");
pub const OPEN_CHAT: Text = text("open_chat", "Open chat");
pub const CLOSE_CHAT: Text = text("close_chat", "Close chat");
pub const CLEAR: Text = text("clear", "Clear");
pub const YOUR_MESSAGE: Text = text("your_message", "Your message");
pub const PLACEHOLDER: Text = text("placeholder", "Ask a question…");
pub const SEND: Text = text("send", "Send");
pub const STOP: Text = text("stop", "Stop");
pub const RETRY: Text = text("retry", "Retry");
/// Above the links to the site's documents an answer is grounded in.
pub const SOURCES: Text = text("sources", "Sources");

// Why an answer did not arrive (`api::ChatError::message`).
pub const STOPPED: Text = text("stopped", "Stopped.");
pub const BUDGET_EXHAUSTED: Text =
    text("budget_exhausted", "The assistant is unavailable for now (its usage limit is reached).");
pub const UPSTREAM_DOWN: Text =
    text("upstream_down", "The assistant could not answer just now. Please try again.");
pub const OFFLINE: Text =
    text("offline", "You seem to be offline. Check your connection and retry.");
pub const SESSION_EXPIRED: Text =
    text("session_expired", "Your session has expired. Reload the page to keep chatting.");
pub const SIGN_IN: Text = text("sign_in", "Please sign in to chat with us.");
pub const UNEXPECTED: Text = text("unexpected", "Unexpected answer from the relay.");
pub const WITH_PERSON_NOW: Text =
    text("with_person_now", "A person is answering this conversation.");
pub const RATE_LIMITED_WAIT: Text =
    text("rate_limited_wait", "Too many messages right now. Please wait {n} s and try again.");
pub const RATE_LIMITED: Text =
    text("rate_limited", "Too many messages right now. Please wait a moment and try again.");
pub const TOO_LONG: Text =
    text("too_long", "That message is too long: please keep it under {n} characters.");
pub const HTTP_ERROR: Text = text("http_error", "Something went wrong (HTTP {n}).");

// Feedback on an answer (sites that keep transcripts).
pub const GOOD_ANSWER: Text = text("good_answer", "Good answer");
pub const BAD_ANSWER: Text = text("bad_answer", "Bad answer");
pub const COMMENT_LABEL: Text = text("comment_label", "What was wrong? (optional)");
pub const SEND_COMMENT: Text = text("send_comment", "Send");
pub const THANKS: Text = text("thanks", "Thanks for your feedback.");

// Talking to a person (sites that offer a hand-off).
pub const TALK_TO_PERSON: Text = text("talk_to_person", "Talk to a person");
pub const WAITING_FOR_PERSON: Text = text("waiting_for_person", "Waiting for a person…");
pub const CHATTING_WITH_PERSON: Text =
    text("chatting_with_person", "You are chatting with a person");
/// The label on a person's message.
pub const FROM_PERSON: Text = text("from_person", "Person");
/// The launcher's name while a person's replies wait unread in the closed panel: one key per
/// plural category of the language (`_one`, `_few`, `_many`, `_other`, ...; `Intl.PluralRules`
/// picks), `_other` for any category the file lacks.
pub const OPEN_CHAT_UNREAD: &str = "open_chat_unread";
pub const OPEN_CHAT_UNREAD_ONE: Text =
    text("open_chat_unread_one", "Open chat ({n} new message from a person)");
pub const OPEN_CHAT_UNREAD_OTHER: Text =
    text("open_chat_unread_other", "Open chat ({n} new messages from a person)");

/// Words that, alone in a visitor's message, suggest they want a person (`conversation::
/// wants_person`), in lower case, separated by spaces. A language's are added to English's.
pub const PERSON_WORDS: Text =
    text("person_words", "human humans person people agent representative operator staff");
/// Phrases that suggest the same, word by word, in lower case, separated by `|`.
pub const PERSON_PHRASES: Text =
    text("person_phrases", "talk to someone|speak to someone|someone real");

/// Every text, for the tests that hold the locale files to the same keys and placeholders.
pub const ALL: &[Text] = &[
    DEFAULT_TITLE,
    OPEN_CHAT,
    CLOSE_CHAT,
    CLEAR,
    YOUR_MESSAGE,
    PLACEHOLDER,
    SEND,
    STOP,
    RETRY,
    SOURCES,
    STOPPED,
    BUDGET_EXHAUSTED,
    UPSTREAM_DOWN,
    OFFLINE,
    SESSION_EXPIRED,
    SIGN_IN,
    UNEXPECTED,
    WITH_PERSON_NOW,
    RATE_LIMITED_WAIT,
    RATE_LIMITED,
    TOO_LONG,
    HTTP_ERROR,
    GOOD_ANSWER,
    BAD_ANSWER,
    COMMENT_LABEL,
    SEND_COMMENT,
    THANKS,
    TALK_TO_PERSON,
    WAITING_FOR_PERSON,
    CHATTING_WITH_PERSON,
    FROM_PERSON,
    OPEN_CHAT_UNREAD_ONE,
    OPEN_CHAT_UNREAD_OTHER,
    PERSON_WORDS,
    PERSON_PHRASES,
];

/// `n` in decimal. Not `to_string`, which brings `core::fmt`'s machinery into the module.
pub fn decimal(mut n: u64) -> String {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    digits[at..].iter().map(|&d| char::from(d)).collect()
}

/// The texts of one chat (see the module's documentation).
#[derive(Debug, Clone, Default)]
pub struct Strings {
    /// Key to text: the locale's, with the site's overrides on top; none for English alone.
    table: Option<Object>,
    /// The chat's language (a BCP 47 tag), for plural rules.
    locale: Option<String>,
}

impl Strings {
    /// `table` is the `strings` mount option: an object of key to text (anything else is no
    /// table).
    pub fn new(table: JsValue, locale: Option<String>) -> Self {
        Self { table: table.dyn_into::<Object>().ok(), locale }
    }

    /// `text` in this chat's language.
    pub fn get(&self, text: Text) -> String {
        self.lookup(text.key).unwrap_or_else(|| text.en.to_owned())
    }

    /// `text` with its `{n}` replaced by `n`.
    pub fn with(&self, text: Text, n: &str) -> String {
        self.get(text).replace("{n}", n)
    }

    fn lookup(&self, key: &str) -> Option<String> {
        let table = self.table.as_ref()?;
        Reflect::get(table, &key.into()).ok()?.as_string().filter(|text| !text.is_empty())
    }

    /// The launcher's name with `count` unread replies from a person.
    pub fn open_chat_unread(&self, count: u32) -> String {
        let n = decimal(u64::from(count));
        let category = self.plural_category(count);
        let key = [OPEN_CHAT_UNREAD, "_", &category].concat();
        match self.lookup(&key).or_else(|| self.lookup(OPEN_CHAT_UNREAD_OTHER.key)) {
            Some(text) => text.replace("{n}", &n),
            None if count == 1 => OPEN_CHAT_UNREAD_ONE.en.replace("{n}", &n),
            None => OPEN_CHAT_UNREAD_OTHER.en.replace("{n}", &n),
        }
    }

    /// `Intl.PluralRules`' category of `count` in this chat's language (`one`, `few`, ...);
    /// `other` if the browser refuses the language's tag (it throws on a malformed one, which
    /// must not unwind through the module).
    fn plural_category(&self, count: u32) -> String {
        let locales = Array::new();
        if let Some(locale) = &self.locale {
            locales.push(&locale.into());
        }
        let category = || -> Option<String> {
            let intl = Reflect::get(&js_sys::global(), &"Intl".into()).ok()?;
            let constructor: js_sys::Function =
                Reflect::get(&intl, &"PluralRules".into()).ok()?.dyn_into().ok()?;
            let rules = Reflect::construct(&constructor, &Array::of1(&locales)).ok()?;
            let select: js_sys::Function =
                Reflect::get(&rules, &"select".into()).ok()?.dyn_into().ok()?;
            select.call1(&rules, &f64::from(count).into()).ok()?.as_string()
        };
        category().unwrap_or_else(|| "other".into())
    }

    /// The words and phrases (each as its words) that suggest a visitor wants a person:
    /// English's and this language's (lower case, as the files give them).
    pub fn person_words(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let mut words = Vec::new();
        let mut phrases = Vec::new();
        let texts = [PERSON_WORDS.en.to_owned(), self.lookup(PERSON_WORDS.key).unwrap_or_default()];
        for text in texts {
            words.extend(text.split_whitespace().map(str::to_owned));
        }
        let texts =
            [PERSON_PHRASES.en.to_owned(), self.lookup(PERSON_PHRASES.key).unwrap_or_default()];
        for text in texts {
            phrases.extend(
                text.split('|')
                    .map(|p| p.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                    .filter(|p| !p.is_empty()),
            );
        }
        (words, phrases)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn decimals_as_to_string_writes_them() {
        for n in [0, 7, 10, 99, 1_234_567, u64::MAX] {
            assert_eq!(decimal(n), n.to_string());
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn english_needs_no_table() {
        let strings = Strings::default();
        assert_eq!(strings.get(SEND), "Send");
        assert_eq!(strings.with(TOO_LONG, "200"), TOO_LONG.en.replace("{n}", "200"));
        let (words, phrases) = strings.person_words();
        assert!(words.contains(&"human".to_owned()));
        assert!(phrases.contains(&vec!["talk".to_owned(), "to".into(), "someone".into()]));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn every_key_is_unique_and_counted_texts_carry_their_number() {
        let mut keys: Vec<&str> = ALL.iter().map(|t| t.key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), ALL.len());
        for text in ALL {
            let counted = [
                RATE_LIMITED_WAIT,
                TOO_LONG,
                HTTP_ERROR,
                OPEN_CHAT_UNREAD_ONE,
                OPEN_CHAT_UNREAD_OTHER,
            ]
            .contains(text);
            assert_eq!(text.en.matches("{n}").count(), usize::from(counted), "{}", text.key);
        }
    }

    // A language's table wins, a missing or empty key falls back to English, and the unread
    // count takes the language's plural form (Polish: one, few, many).
    #[cfg(target_family = "wasm")]
    #[wasm_bindgen_test]
    fn a_languages_table_and_its_plural_forms() {
        let table = Object::new();
        for (key, value) in [
            ("send", "Wyślij"),
            ("clear", ""),
            ("open_chat_unread_one", "Otwórz czat ({n} nowa wiadomość)"),
            ("open_chat_unread_few", "Otwórz czat ({n} nowe wiadomości)"),
            ("open_chat_unread_many", "Otwórz czat ({n} nowych wiadomości)"),
        ] {
            let _ = Reflect::set(&table, &key.into(), &value.into());
        }
        let strings = Strings::new(table.into(), Some("pl".into()));
        assert_eq!(strings.get(SEND), "Wyślij");
        assert_eq!(strings.get(CLEAR), "Clear");
        assert_eq!(strings.open_chat_unread(1), "Otwórz czat (1 nowa wiadomość)");
        assert_eq!(strings.open_chat_unread(3), "Otwórz czat (3 nowe wiadomości)");
        assert_eq!(strings.open_chat_unread(5), "Otwórz czat (5 nowych wiadomości)");
        // No `_other` in the table: English's.
        assert_eq!(
            Strings::default().open_chat_unread(2),
            "Open chat (2 new messages from a person)"
        );
        assert_eq!(
            Strings::default().open_chat_unread(1),
            "Open chat (1 new message from a person)"
        );
        // A tag the browser refuses gives the `other` form, not an exception.
        let table = Object::new();
        for (key, value) in
            [("open_chat_unread_one", "ONE {n}"), ("open_chat_unread_other", "OTHER {n}")]
        {
            let _ = Reflect::set(&table, &key.into(), &value.into());
        }
        let refused = Strings::new(table.into(), Some("pt_BR".into()));
        assert_eq!(refused.open_chat_unread(1), "OTHER 1");
    }
}
