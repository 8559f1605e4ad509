//! Conversations kept on the relay (for sites that turn transcripts on): how the widget names
//! its conversation, rates answers, asks for a person and hears a person's replies.
//!
//! - Every chat request of a conversation carries [`CONVERSATION_HEADER`] (an id the widget makes
//!   once per conversation: [`is_conversation_id`]) and [`PAGE_HEADER`] (the page's URL).
//! - `POST /v1/feedback` takes a [`FeedbackRequest`] (`202`).
//! - `POST /v1/conversations/{id}/handoff` asks for a person (`200`, a [`HolderEvent`]); from
//!   then on the bot does not answer the conversation (chat requests get `409
//!   conversation_with_person`) and the visitor's messages go to
//!   `POST /v1/conversations/{id}/messages` as a [`VisitorMessage`] (`201`, a [`ConversationEvent`]).
//! - `GET /v1/conversations/{id}/events?after=SEQ` is an SSE stream of `message` events (a
//!   [`ConversationEvent`] by a person, `id:` its `seq`) and `holder` events (a [`HolderEvent`]),
//!   starting with the conversation's current holder and every person's message after `SEQ`.

use serde::{Deserialize, Serialize};

/// The request header naming the conversation a chat request belongs to.
pub const CONVERSATION_HEADER: &str = "X-Confab-Conversation";
/// The request header with the URL of the page the widget is on.
pub const PAGE_HEADER: &str = "X-Confab-Page";

/// A conversation id as the relay accepts it: 16 to 64 of `A-Z a-z 0-9 _ -`. Whoever knows it
/// can add to the conversation and read a person's replies, so the widget makes it from at
/// least 128 random bits.
pub fn is_conversation_id(id: &str) -> bool {
    (16..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `POST /v1/feedback`: a visitor's verdict on one answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    /// The conversation's id (as in [`CONVERSATION_HEADER`]).
    pub conversation: String,
    /// The answer's request id (the chat response's `X-Request-Id` header).
    pub message: String,
    /// `up` or `down`.
    pub rating: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// `POST /v1/conversations/{id}/messages`: what a visitor says to a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisitorMessage {
    pub content: String,
}

/// A message of a conversation, as the visitor's widget hears of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationEvent {
    /// Its place in the conversation (1, 2, 3…): `after` for the next `events` request.
    pub seq: i64,
    /// `visitor`, `bot` or `operator` (a person).
    pub author: String,
    pub content: String,
    /// Unix milliseconds.
    pub at: i64,
}

/// Who answers the conversation: `bot`, `waiting` (a person was asked for) or `person`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderEvent {
    pub holder: String,
}
