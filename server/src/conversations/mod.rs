//! Conversations kept on the server, for sites that turn transcripts on (issue 14).
//!
//! - A chat request that names its conversation (`X-Confab-Conversation`) on such a site gets a
//!   [`Transcript`]: the meter carries it, the relay adds the answer's text as it streams, and
//!   when the request settles the finished [`Turn`] (question, answer, tokens, cost, outcome)
//!   goes to the [`TurnRecorder`], which writes turns in batches off the request path, masking
//!   contacts first where the site asks for it ([`mask`]).
//! - While a person holds a conversation (hand-off), the bot does not answer it: the chat
//!   request is refused with 409 `conversation_with_person` before anything is charged.
//! - [`Live`] tells the visitors' open event streams (`GET /v1/conversations/{id}/events`) on
//!   this relay that a conversation changed; they also poll the store, so a reply written
//!   through another relay arrives too.
//! - [`sweep`] deletes conversations past their site's retention.

pub mod mask;
mod recorder;

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use confab_protocol::{CONVERSATION_HEADER, PAGE_HEADER, is_conversation_id};

pub use recorder::TurnRecorder;

use crate::error::ApiError;
use crate::store::{Site, Store, Turn, UsageRecord};

/// What the widget tells visitors of a site that keeps transcripts, unless the site says
/// otherwise.
pub const NOTICE: &str = "This conversation is recorded to help us improve our answers.";

/// The longest answer text a transcript keeps (an answer is bounded by `max_tokens` anyway).
const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// The longest page URL kept.
const MAX_PAGE_BYTES: usize = 2048;
/// The longest message a visitor may send to a person, or an operator to a visitor, and the
/// longest feedback comment, in UTF-8 bytes.
pub const MAX_COMMENT_BYTES: usize = 2000;

/// The conversation a chat request of a site that keeps transcripts belongs to.
#[derive(Debug, Clone)]
pub struct Context {
    pub id: String,
    pub page_url: Option<String>,
}

/// The conversation named by the request's headers, on a site that keeps transcripts; `None`
/// for any other site (the headers are then ignored) or a request that names none.
pub fn context_of(site: &Site, headers: &HeaderMap) -> Result<Option<Context>, ApiError> {
    if !site.settings.conversations.transcripts {
        return Ok(None);
    }
    let Some(value) = headers.get(CONVERSATION_HEADER) else { return Ok(None) };
    let id = value.to_str().ok().filter(|id| is_conversation_id(id)).ok_or_else(|| {
        ApiError::invalid(
            "invalid_conversation",
            "X-Confab-Conversation must be 16 to 64 letters, digits, `_` or `-`",
        )
    })?;
    Ok(Some(Context { id: id.to_owned(), page_url: page_url(headers) }))
}

/// The page the widget is on: `X-Confab-Page`, else the `Referer` (which browsers cut to the
/// origin on cross-origin requests); only an http(s) URL, cut to 2 KiB.
pub fn page_url(headers: &HeaderMap) -> Option<String> {
    let value = headers
        .get(PAGE_HEADER)
        .or_else(|| headers.get(axum::http::header::REFERER))
        .and_then(|v| v.to_str().ok())?;
    let url = url::Url::parse(value).ok().filter(|u| matches!(u.scheme(), "http" | "https"))?;
    let mut text = String::from(url);
    if text.len() > MAX_PAGE_BYTES {
        let mut end = MAX_PAGE_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    Some(text)
}

/// Refuses a chat request for a conversation a person holds (or was asked to), so that the bot
/// stays quiet. Only for sites that offer hand-off: the only ones that read the store here. A
/// store that cannot be read lets the bot answer (logged): an outage of the database must not
/// silence every widget.
pub async fn ensure_bot_answers(
    store: &dyn Store,
    site: &Site,
    context: &Context,
) -> Result<(), ApiError> {
    if !site.settings.conversations.handoff {
        return Ok(());
    }
    match store.conversation(&context.id).await {
        Ok(Some(conversation)) if conversation.site_id != site.id => Err(ApiError::invalid(
            "invalid_conversation",
            "this conversation id belongs to another site; start a new conversation",
        )),
        Ok(Some(conversation)) if !conversation.holder.bot_answers() => Err(ApiError::Conflict {
            code: "conversation_with_person",
            message: "a person is answering this conversation; send messages to \
                      /v1/conversations/{id}/messages"
                .into(),
        }),
        Ok(_) => Ok(()),
        Err(error) => {
            tracing::warn!(%error, "cannot read the conversation's holder; the bot answers");
            Ok(())
        }
    }
}

/// A chat request's part of its conversation, carried by its meter until it settles.
#[derive(Debug)]
pub struct Transcript {
    turn: Turn,
    mask: bool,
    sink: TurnRecorder,
}

impl Transcript {
    /// The turn of the request recorded by `record` (site, visitor, request id), asking
    /// `question`.
    pub fn new(
        site: &Site,
        context: Context,
        record: &UsageRecord,
        question: String,
        sink: TurnRecorder,
    ) -> Self {
        let turn = Turn {
            conversation_id: context.id,
            site_id: site.id.clone(),
            visitor: record.visitor.clone(),
            page_url: context.page_url,
            model: record.model.clone(),
            request_id: record.request_id.clone(),
            at_ms: record.at_ms,
            question,
            answer: String::new(),
            input_tokens: 0,
            output_tokens: 0,
            cost_micros: 0,
            outcome: record.outcome,
        };
        Self { turn, mask: site.settings.conversations.mask_contacts, sink }
    }

    /// Adds text the answer streamed.
    pub fn answered(&mut self, text: &str) {
        let room = MAX_ANSWER_BYTES.saturating_sub(self.turn.answer.len());
        if text.len() <= room {
            self.turn.answer.push_str(text);
        } else {
            let mut end = room;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            self.turn.answer.push_str(&text[..end]);
        }
    }

    /// Hands the finished turn to the writer, with what the request's final `record` says.
    pub fn finish(mut self, record: &UsageRecord) {
        let turn = &mut self.turn;
        record.model.clone_into(&mut turn.model);
        turn.input_tokens = record.input_tokens;
        turn.output_tokens = record.output_tokens;
        turn.cost_micros = record.cost_micros;
        turn.outcome = record.outcome;
        self.sink.record(self.turn, self.mask);
    }
}

/// Tells this relay's open conversation event streams which conversation changed.
#[derive(Debug, Clone)]
pub struct Live(tokio::sync::broadcast::Sender<Arc<str>>);

impl Default for Live {
    fn default() -> Self {
        Self(tokio::sync::broadcast::channel(256).0)
    }
}

impl Live {
    pub fn changed(&self, id: &str) {
        let _ = self.0.send(Arc::from(id));
    }

    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<str>> {
        self.0.subscribe()
    }
}

/// How often conversations past their retention are looked for.
pub const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// Deletes every site's conversations not updated within its retention, now and then every
/// `every`, for as long as the relay runs. Sites with transcripts off are swept too: turning
/// transcripts off stops recording, and what was kept still expires.
pub async fn sweep(store: Arc<dyn Store>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match sweep_once(store.as_ref(), crate::unix_now_ms()).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "expired conversations deleted"),
            Err(error) => tracing::warn!(%error, "cannot delete expired conversations"),
        }
    }
}

/// One sweep at `now_ms`; how many conversations were deleted.
pub async fn sweep_once(store: &dyn Store, now_ms: i64) -> Result<u64, crate::store::StoreError> {
    let mut deleted = 0u64;
    for site in store.list_sites().await? {
        let days = i64::from(site.settings.conversations.retention_days);
        let before_ms = now_ms.saturating_sub(days.saturating_mul(86_400_000));
        deleted = deleted.saturating_add(store.prune_conversations(&site.id, before_ms).await?);
    }
    Ok(deleted)
}
