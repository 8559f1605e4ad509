//! Every text the widget shows or announces to visitors, in one place, so that translating the
//! widget means translating this file. The few that carry a number are functions.

/// The panel's title when neither the page nor the site names it.
pub const DEFAULT_TITLE: &str = "Chat";
pub const OPEN_CHAT: &str = "Open chat";
pub const CLOSE_CHAT: &str = "Close chat";
pub const CLEAR: &str = "Clear";
pub const YOUR_MESSAGE: &str = "Your message";
pub const PLACEHOLDER: &str = "Ask a question…";
pub const SEND: &str = "Send";
pub const STOP: &str = "Stop";
pub const RETRY: &str = "Retry";
/// Above the links to the site's documents an answer is grounded in.
pub const SOURCES: &str = "Sources";

// Why an answer did not arrive (`api::ChatError::message`).
pub const STOPPED: &str = "Stopped.";
pub const BUDGET_EXHAUSTED: &str =
    "The assistant is unavailable for now (its usage limit is reached).";
pub const UPSTREAM_DOWN: &str = "The assistant could not answer just now. Please try again.";
pub const OFFLINE: &str = "You seem to be offline. Check your connection and retry.";
pub const SESSION_EXPIRED: &str = "Your session has expired. Reload the page to keep chatting.";
pub const SIGN_IN: &str = "Please sign in to chat with us.";
pub const UNEXPECTED: &str = "Unexpected answer from the relay.";
pub const WITH_PERSON_NOW: &str = "A person is answering this conversation.";

pub fn rate_limited(retry_after: Option<u32>) -> String {
    match retry_after {
        Some(s) => format!("Too many messages right now. Please wait {s} s and try again."),
        None => "Too many messages right now. Please wait a moment and try again.".into(),
    }
}

pub fn too_long(limit: usize) -> String {
    format!("That message is too long: please keep it under {limit} characters.")
}

pub fn http_error(status: u16) -> String {
    format!("Something went wrong (HTTP {status}).")
}

// Feedback on an answer (sites that keep transcripts).
pub const GOOD_ANSWER: &str = "Good answer";
pub const BAD_ANSWER: &str = "Bad answer";
pub const COMMENT_LABEL: &str = "What was wrong? (optional)";
pub const SEND_COMMENT: &str = "Send";
pub const THANKS: &str = "Thanks for your feedback.";

// Talking to a person (sites that offer a hand-off).
pub const TALK_TO_PERSON: &str = "Talk to a person";
pub const WAITING_FOR_PERSON: &str = "Waiting for a person…";
pub const CHATTING_WITH_PERSON: &str = "You are chatting with a person";
/// The label on a person's message.
pub const FROM_PERSON: &str = "Person";

/// The launcher's name while a person's replies wait unread in the closed panel.
pub fn open_chat_unread(count: u32) -> String {
    match count {
        1 => "Open chat (1 new message from a person)".into(),
        n => format!("Open chat ({n} new messages from a person)"),
    }
}

/// Words that, alone in a visitor's message, suggest they want a person (`conversation::
/// wants_person`), in lower case.
pub const PERSON_WORDS: &[&str] =
    &["human", "humans", "person", "people", "agent", "representative", "operator", "staff"];
/// Phrases that suggest the same, word by word, in lower case.
pub const PERSON_PHRASES: &[&[&str]] =
    &[&["talk", "to", "someone"], &["speak", "to", "someone"], &["someone", "real"]];
