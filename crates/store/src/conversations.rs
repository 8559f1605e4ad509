//! Conversations kept on the server (issue 14): a site that turns transcripts on has each
//! conversation's questions and answers stored, with what it cost, the visitors' feedback and,
//! where the site offers one, its hand-off to a person. [`Conversations`] is the seam every
//! engine implements; the relay writes turns off the request path, in batches, like usage.

use async_trait::async_trait;

use crate::{Outcome, StoreError};

/// How a site keeps conversations (all off by default).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConversationSettings {
    /// Store each conversation (visitor hash, page, messages, model, tokens, cost, outcome).
    pub transcripts: bool,
    /// Conversations not touched for this many days are deleted.
    pub retention_days: u32,
    /// Replace e-mail addresses and phone numbers with `[email]` and `[phone]` before storage.
    pub mask_contacts: bool,
    /// The line the widget shows when transcripts are kept; `None`: the relay's default text.
    pub notice: Option<String>,
    /// Offer "talk to a person" in the widget.
    pub handoff: bool,
}

/// Conversations are kept 30 days unless the site says otherwise.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;
/// The longest retention a site may choose (ten years).
pub const MAX_RETENTION_DAYS: u32 = 3650;

impl Default for ConversationSettings {
    fn default() -> Self {
        Self {
            transcripts: false,
            retention_days: DEFAULT_RETENTION_DAYS,
            mask_contacts: false,
            notice: None,
            handoff: false,
        }
    }
}

impl ConversationSettings {
    /// As an engine stores it: `None` when every setting is at its default.
    pub fn to_column(&self) -> Option<String> {
        (*self != Self::default()).then(|| serde_json::to_string(self).unwrap_or_default())
    }

    /// What [`ConversationSettings::to_column`] stored.
    pub fn from_column(column: Option<&str>) -> Result<Self, StoreError> {
        column.map_or(Ok(Self::default()), |text| {
            serde_json::from_str(text)
                .map_err(|e| StoreError::Corrupt(format!("sites.conversations: {e}")))
        })
    }
}

/// Who answers a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Holder {
    /// The model answers (the usual case).
    #[default]
    Bot,
    /// The visitor asked for a person and nobody has replied yet: the model no longer answers.
    Waiting,
    /// An operator holds the conversation until they hand it back.
    Person,
}

impl Holder {
    pub const ALL: [Holder; 3] = [Holder::Bot, Holder::Waiting, Holder::Person];

    pub fn as_str(self) -> &'static str {
        match self {
            Holder::Bot => "bot",
            Holder::Waiting => "waiting",
            Holder::Person => "person",
        }
    }

    pub fn from_name(name: &str) -> Option<Holder> {
        Holder::ALL.into_iter().find(|h| h.as_str() == name)
    }

    /// Whether the model may answer.
    pub fn bot_answers(self) -> bool {
        self == Holder::Bot
    }
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Author {
    Visitor,
    /// The model.
    Bot,
    /// A person, from the console or the admin API.
    Operator,
}

impl Author {
    pub const ALL: [Author; 3] = [Author::Visitor, Author::Bot, Author::Operator];

    pub fn as_str(self) -> &'static str {
        match self {
            Author::Visitor => "visitor",
            Author::Bot => "bot",
            Author::Operator => "operator",
        }
    }

    pub fn from_name(name: &str) -> Option<Author> {
        Author::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// A visitor's verdict on an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// What one answered chat request adds to its conversation: the visitor's question and the
/// model's answer, with what the request cost. The first turn of a conversation creates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub conversation_id: String,
    pub site_id: String,
    /// The visitor's id or IP, hashed (as in usage records).
    pub visitor: Option<String>,
    /// The page the widget was on (the `Referer` the browser sent).
    pub page_url: Option<String>,
    pub model: String,
    /// The chat request's id: feedback on the answer names it.
    pub request_id: String,
    /// Unix milliseconds when the request arrived.
    pub at_ms: i64,
    pub question: String,
    /// What reached the visitor (possibly cut short: see `outcome`).
    pub answer: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: u64,
    pub outcome: Outcome,
}

/// A message a person or a visitor adds outside a chat request (an operator's reply; what a
/// visitor says while a person holds the conversation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub conversation_id: String,
    pub site_id: String,
    pub author: Author,
    pub content: String,
    pub at_ms: i64,
    /// Used when the message starts the conversation (a visitor asking for a person first).
    pub visitor: Option<String>,
    pub page_url: Option<String>,
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// 1, 2, 3… in the conversation: the cursor of anyone following it.
    pub seq: i64,
    pub at_ms: i64,
    pub author: Author,
    pub content: String,
    /// For the model's answers: the chat request's id.
    pub request_id: Option<String>,
    /// The visitor's feedback on this answer, if any.
    pub rating: Option<Rating>,
    pub comment: Option<String>,
}

/// A conversation without its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub id: String,
    pub site_id: String,
    pub visitor: Option<String>,
    pub page_url: Option<String>,
    /// The model of the latest answer.
    pub model: Option<String>,
    pub started_at_ms: i64,
    pub updated_at_ms: i64,
    pub messages: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: u64,
    /// How the latest answer ended.
    pub outcome: Option<Outcome>,
    pub holder: Holder,
    /// When the visitor last asked for a person.
    pub handoff_at_ms: Option<i64>,
    pub feedback_up: u64,
    pub feedback_down: u64,
}

/// Feedback on one answer (the latest for an answer replaces an earlier one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    pub conversation_id: String,
    pub site_id: String,
    /// The answer's chat request id.
    pub request_id: String,
    pub rating: Rating,
    pub comment: Option<String>,
    pub at_ms: i64,
}

/// Which conversations a listing returns, newest activity first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConversationFilter {
    pub site_id: Option<String>,
    pub visitor: Option<String>,
    pub holder: Option<Holder>,
    /// With at least one rating of this kind.
    pub rating: Option<Rating>,
    /// Messages containing this text (case-insensitive for ASCII).
    pub text: Option<String>,
    /// Updated at or after this time (unix ms).
    pub since_ms: Option<i64>,
    /// The page cursor: conversations strictly older than this `(updated_at_ms, id)`.
    pub before: Option<(i64, String)>,
    pub limit: u32,
}

/// The conversations seam; every engine implements it (through `Store`).
#[async_trait]
pub trait Conversations: Send + Sync {
    /// Adds each turn (question and answer, as two messages) to its conversation, creating the
    /// conversation on its first turn, all in one transaction. A turn naming a conversation of
    /// another site is dropped: ids are chosen by visitors' browsers.
    async fn record_turns(&self, turns: &[Turn]) -> Result<(), StoreError>;
    /// Adds one message; the conversation is created for a visitor's message, and must exist
    /// (of that site) for an operator's. `None` when it does not.
    async fn add_message(&self, message: &NewMessage) -> Result<Option<Message>, StoreError>;
    /// Makes sure the conversation exists (created at `at_ms` for this visitor and page when it
    /// does not); `false` when it belongs to another site.
    async fn open_conversation(
        &self,
        id: &str,
        site_id: &str,
        visitor: Option<&str>,
        page_url: Option<&str>,
        at_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Sets who answers the conversation (`Waiting` also notes when); `false` when there is none.
    async fn set_holder(&self, id: &str, holder: Holder, at_ms: i64) -> Result<bool, StoreError>;
    async fn conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError>;
    /// Messages after `after_seq`, oldest first, at most `limit`, with their feedback.
    async fn messages(
        &self,
        id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError>;
    async fn list_conversations(
        &self,
        filter: &ConversationFilter,
    ) -> Result<Vec<Conversation>, StoreError>;
    /// Records (or replaces) the feedback on an answer.
    async fn record_feedback(&self, feedback: &Feedback) -> Result<(), StoreError>;
    /// Deletes a conversation with its messages and feedback; `false` when there was none.
    async fn delete_conversation(&self, id: &str) -> Result<bool, StoreError>;
    /// Erases a visitor: every conversation (optionally of one site) with that visitor hash.
    /// Returns how many conversations were deleted.
    async fn delete_visitor(&self, visitor: &str, site_id: Option<&str>)
    -> Result<u64, StoreError>;
    /// Deletes the site's conversations last updated before `before_ms`; returns how many.
    async fn prune_conversations(&self, site_id: &str, before_ms: i64) -> Result<u64, StoreError>;
}

/// `%`, `_` and `\` escaped for a `LIKE … ESCAPE '\'` pattern, wrapped in `%…%`.
pub fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}
