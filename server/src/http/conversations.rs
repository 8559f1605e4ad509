//! Conversations over HTTP (issue 14).
//!
//! For visitors, under the site key and its origins (see `confab_protocol::conversation`):
//! `POST /v1/feedback`, `POST /v1/conversations/{id}/handoff`,
//! `POST /v1/conversations/{id}/messages` and `GET /v1/conversations/{id}/events`.
//!
//! For operators, under the admin token: `GET /admin/v1/conversations` (filtered, paged),
//! `GET`/`DELETE /admin/v1/conversations/{id}`, `POST /admin/v1/conversations/{id}/messages`
//! (a person's reply: the person holds the conversation from then on),
//! `POST /admin/v1/conversations/{id}/release` (back to the bot), `DELETE
//! /admin/v1/conversations?visitor=HASH` (erase a visitor), `PATCH
//! /admin/v1/sites/{id}/conversations`; and `GET /admin/v1/shared/conversations/{id}`, the
//! read-only view that the signed link of a `conversation.handoff` webhook opens without the
//! token.

use std::net::IpAddr;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use bytes::{BufMut, Bytes, BytesMut};
use confab_admin_api::{
    ConversationSettingsPatch, ConversationView, FeedbackCounts, MessageView, OperatorMessage, Page,
};
use confab_protocol::{
    ConversationEvent, FeedbackRequest, HolderEvent, VisitorMessage, is_conversation_id,
};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::admin::{Admin, not_found};
use super::auth::{site_visitor, visitor_hash};
use super::chat::{Peer, refused, visitor_rule};
use super::json::{ApiQuery, OptionalApiJson};
use super::{ApiJson, AppState, SiteAuth};
use crate::conversations::{MAX_COMMENT_BYTES, mask::mask_contacts, page_url};
use crate::error::ApiError;
use crate::limits::Subject;
use crate::sites::{self, Change, ConversationsChange, SiteError};
use crate::store::{
    Author, Conversation, ConversationFilter, Feedback, Holder, Message, NewMessage, Rating, Site,
};
use crate::visitor::Visitor;
use crate::webhooks::events::{SharedLink, hmac_hex};
use confab_metering::admission::Claim;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/feedback", post(feedback))
        .route("/v1/conversations/{id}/handoff", post(handoff))
        .route("/v1/conversations/{id}/messages", post(visitor_message))
        .route("/v1/conversations/{id}/events", get(events))
}

pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route("/admin/v1/conversations", get(list).delete(erase_visitor))
        .route("/admin/v1/conversations/{id}", get(show).delete(delete_one))
        .route("/admin/v1/conversations/{id}/messages", post(operator_message))
        .route("/admin/v1/conversations/{id}/release", post(release))
        .route("/admin/v1/shared/conversations/{id}", get(shared))
        .route("/admin/v1/sites/{id}/conversations", patch(change_settings))
}

/// A conversation id from the path, checked like the header.
fn conversation_id(id: &str) -> Result<&str, ApiError> {
    if is_conversation_id(id) {
        Ok(id)
    } else {
        Err(ApiError::invalid(
            "invalid_conversation",
            "a conversation id is 16 to 64 letters, digits, `_` or `-`",
        ))
    }
}

/// A message's text: trimmed, not empty, at most `max` bytes, without control characters but
/// line breaks and tabs.
fn message_text(text: &str, field: &'static str, max: usize) -> Result<String, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ApiError::invalid("invalid_message", format!("`{field}` is empty")));
    }
    if text.len() > max {
        return Err(ApiError::invalid(
            "message_too_long",
            format!("`{field}` is longer than {max} bytes"),
        ));
    }
    if text.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(ApiError::invalid(
            "invalid_message",
            format!("`{field}` contains control characters"),
        ));
    }
    Ok(text.to_owned())
}

/// The site's conversations, or 403 when it keeps none.
fn keeping(site: &Site) -> Result<(), ApiError> {
    if site.settings.conversations.transcripts {
        Ok(())
    } else {
        Err(ApiError::PermissionDenied {
            code: "transcripts_off",
            message: "this site keeps no conversations".into(),
        })
    }
}

/// The conversation, when it is this site's; 404 otherwise (another site's is not told apart).
async fn of_site(state: &AppState, site: &Site, id: &str) -> Result<Conversation, ApiError> {
    match state.store.conversation(id).await.map_err(ApiError::internal)? {
        Some(conversation) if conversation.site_id == site.id => Ok(conversation),
        _ => Err(not_found("conversation", id)),
    }
}

fn event_of(message: &Message) -> ConversationEvent {
    ConversationEvent {
        seq: message.seq,
        author: message.author.as_str().to_owned(),
        content: message.content.clone(),
        at: message.at_ms,
    }
}

/// `POST /v1/feedback`: counted in the metrics always; stored only for a site that keeps
/// transcripts (`stored` says which).
async fn feedback(
    State(state): State<AppState>,
    SiteAuth { site }: SiteAuth,
    Peer(peer): Peer,
    headers: HeaderMap,
    ApiJson(body): ApiJson<FeedbackRequest>,
) -> Result<Response, ApiError> {
    let id = conversation_id(&body.conversation)?;
    let request_id = body.message.trim();
    if request_id.is_empty()
        || request_id.len() > 128
        || !request_id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::invalid(
            "invalid_message",
            "`message` is the answer's request id (X-Request-Id): 1 to 128 visible characters",
        ));
    }
    let rating = Rating::from_name(&body.rating)
        .ok_or_else(|| ApiError::invalid("invalid_rating", "`rating` is `up` or `down`"))?;
    let comment = match body.comment.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(message_text(text, "comment", MAX_COMMENT_BYTES)?),
    };
    visitor_of(&state, &site, peer, &headers).await?;
    state.metrics.feedback(rating.as_str());
    let kept = &site.settings.conversations;
    if kept.transcripts {
        let comment = if kept.mask_contacts { comment.map(|c| mask_contacts(&c)) } else { comment };
        let feedback = Feedback {
            conversation_id: id.to_owned(),
            site_id: site.id.clone(),
            request_id: request_id.to_owned(),
            rating,
            comment,
            at_ms: crate::unix_now_ms(),
        };
        state.store.record_feedback(&feedback).await.map_err(ApiError::internal)?;
    }
    Ok((StatusCode::ACCEPTED, Json(json!({"stored": kept.transcripts}))).into_response())
}

/// The hashed visitor of a request (as usage records have it), once the call is counted
/// against the visitor's limits (see [`count_call`]).
async fn visitor_of(
    state: &AppState,
    site: &Site,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
) -> Result<String, ApiError> {
    let visitor = site_visitor(state, site, peer, headers)?;
    count_call(state, site, &visitor).await?;
    Ok(visitor_hash(state, site, &visitor))
}

/// Counts one of a visitor's conversation calls (feedback, a hand-off, a message to a person,
/// opening the events stream) against the visitor's requests per minute and per day, as the
/// relay counts their chat requests (on every relay, with Redis), but in a window of its own:
/// a visitor who used up the day's questions to the bot can still talk to a person. Refused
/// with 429 and `Retry-After` like a chat request; nothing is written then.
async fn count_call(state: &AppState, site: &Site, visitor: &Visitor) -> Result<(), ApiError> {
    let rule = visitor_rule(state, site, visitor);
    let subject = Subject::Visitor {
        site: site.id.clone(),
        visitor: format!("{}#talk", visitor.limit_key()),
    };
    let claim = Claim { checks: vec![(subject, rule)], tokens: 0, payers: &[], cost: 0 };
    let admission = &state.metering.admission;
    let mut pass = admission.admit(claim).await.map_err(|r| refused(state, r))?;
    // Nothing was reserved; settling at once only closes the admission.
    admission.settle(&mut pass, 0, 0).await.ok();
    Ok(())
}

/// `POST /v1/conversations/{id}/handoff`: the visitor asks for a person. The bot stops
/// answering; operators hear of it through `conversation.handoff`.
async fn handoff(
    State(state): State<AppState>,
    SiteAuth { site }: SiteAuth,
    Peer(peer): Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
    _: OptionalApiJson<Value>,
) -> Result<Json<HolderEvent>, ApiError> {
    let id = conversation_id(&id)?;
    keeping(&site)?;
    if !site.settings.conversations.handoff {
        return Err(ApiError::PermissionDenied {
            code: "handoff_off",
            message: "this site does not offer a person to talk to".into(),
        });
    }
    let visitor = visitor_of(&state, &site, peer, &headers).await?;
    let now = crate::unix_now_ms();
    let store = state.store.as_ref();
    let page = page_url(&headers);
    let owned = store
        .open_conversation(id, &site.id, Some(&visitor), page.as_deref(), now)
        .await
        .map_err(ApiError::internal)?;
    if !owned {
        return Err(not_found("conversation", id));
    }
    let conversation = of_site(&state, &site, id).await?;
    // Asked again while a person holds it: nothing changes.
    if conversation.holder == Holder::Person {
        return Ok(Json(HolderEvent { holder: Holder::Person.as_str().into() }));
    }
    store.set_holder(id, Holder::Waiting, now).await.map_err(ApiError::internal)?;
    state.metrics.handoff();
    state.live.changed(id);
    if conversation.holder == Holder::Bot {
        let messages = store.messages(id, 0, 1000).await.map_err(ApiError::internal)?;
        let latest = &messages[messages.len().saturating_sub(20)..];
        state.webhooks.conversation_handoff(&conversation, latest, &shared_link(&state, id));
    }
    Ok(Json(HolderEvent { holder: Holder::Waiting.as_str().into() }))
}

/// `POST /v1/conversations/{id}/messages`: what the visitor says to the person who holds (or
/// was asked to take) the conversation.
async fn visitor_message(
    State(state): State<AppState>,
    SiteAuth { site }: SiteAuth,
    Peer(peer): Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<VisitorMessage>,
) -> Result<Response, ApiError> {
    let id = conversation_id(&id)?;
    keeping(&site)?;
    let conversation = of_site(&state, &site, id).await?;
    if conversation.holder.bot_answers() {
        return Err(ApiError::Conflict {
            code: "conversation_with_bot",
            message: "the bot answers this conversation: send messages to /v1/chat/completions"
                .into(),
        });
    }
    let max = usize::try_from(state.config.limits.max_message_bytes).unwrap_or(usize::MAX);
    let mut content = message_text(&body.content, "content", max)?;
    if site.settings.conversations.mask_contacts {
        content = mask_contacts(&content);
    }
    visitor_of(&state, &site, peer, &headers).await?;
    let message = NewMessage {
        conversation_id: id.to_owned(),
        site_id: site.id.clone(),
        author: Author::Visitor,
        content,
        at_ms: crate::unix_now_ms(),
        visitor: None,
        page_url: None,
    };
    let Some(added) = state.store.add_message(&message).await.map_err(ApiError::internal)? else {
        return Err(not_found("conversation", id));
    };
    state.live.changed(id);
    Ok((StatusCode::CREATED, Json(event_of(&added))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// The last message seen: only later ones are sent.
    #[serde(default)]
    after: i64,
}

/// How long one events response lasts; the widget then asks again from where it was.
const EVENTS_FOR: Duration = Duration::from_secs(30 * 60);

/// `GET /v1/conversations/{id}/events`: the holder now and whenever it changes, and every
/// message a person writes after `after`, as SSE. Woken at once by a change through this relay,
/// and every `conversations.poll_ms` it looks in the store for one through another.
async fn events(
    State(state): State<AppState>,
    SiteAuth { site }: SiteAuth,
    Peer(peer): Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    let id = conversation_id(&id)?.to_owned();
    keeping(&site)?;
    let conversation = of_site(&state, &site, &id).await?;
    visitor_of(&state, &site, peer, &headers).await?;
    let poll = Duration::from_millis(state.config.conversations.poll_ms);
    let heartbeat = state.config.heartbeat();
    let follow = Follow {
        changes: state.live.subscribe(),
        draining: state.draining.watch(),
        state,
        id,
        after: query.after.max(0),
        holder: None,
        ends: tokio::time::Instant::now() + EVENTS_FOR,
        poll,
        first: Some(conversation.holder),
    };
    let batches = futures_util::stream::unfold(follow, |mut follow| async move {
        let batch = follow.next().await?;
        Some((batch, follow))
    });
    let mut response = crate::sse::response(batches, heartbeat);
    response.headers_mut().insert(
        axum::http::HeaderName::from_static("x-accel-buffering"),
        axum::http::HeaderValue::from_static("no"),
    );
    Ok(response)
}

/// One visitor following a conversation.
struct Follow {
    state: AppState,
    changes: tokio::sync::broadcast::Receiver<std::sync::Arc<str>>,
    /// Fires when the relay begins to shut down: the stream ends at once (the widget follows
    /// again, through another relay).
    draining: crate::cut::CutWatch,
    id: String,
    /// The last person's message sent.
    after: i64,
    /// The holder last sent.
    holder: Option<Holder>,
    ends: tokio::time::Instant,
    poll: Duration,
    /// The holder read when the stream opened, sent first.
    first: Option<Holder>,
}

impl Follow {
    /// The next batch of events; `None` when the stream ends (its time is up, the relay begins
    /// to shut down, the conversation is gone).
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(holder) = self.first.take() {
                let mut batch = BytesMut::new();
                self.holder_event(&mut batch, holder);
                if let Some(more) = self.messages().await? {
                    batch.extend_from_slice(&more);
                }
                return Some(batch.freeze());
            }
            let deadline = tokio::time::Instant::now() + self.poll;
            tokio::select! {
                () = self.draining.fired() => return None,
                () = tokio::time::sleep_until(self.ends) => return None,
                () = tokio::time::sleep_until(deadline) => {}
                changed = self.changes.recv() => match changed {
                    Ok(id) if *id != *self.id => continue,
                    // A change of this conversation, or some missed: look.
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                },
            }
            let conversation = match self.state.store.conversation(&self.id).await {
                Ok(Some(conversation)) => conversation,
                Ok(None) => return None,
                Err(error) => {
                    tracing::warn!(%error, "cannot read a followed conversation; will retry");
                    continue;
                }
            };
            let mut batch = BytesMut::new();
            if self.holder != Some(conversation.holder) {
                self.holder_event(&mut batch, conversation.holder);
            }
            if let Some(more) = self.messages().await? {
                batch.extend_from_slice(&more);
            }
            if !batch.is_empty() {
                return Some(batch.freeze());
            }
        }
    }

    fn holder_event(&mut self, batch: &mut BytesMut, holder: Holder) {
        self.holder = Some(holder);
        let data = serde_json::to_string(&HolderEvent { holder: holder.as_str().into() })
            .unwrap_or_default();
        named_event(batch, "holder", None, &data);
    }

    /// A person's messages after the last one sent; `Some(empty)` when there are none, `None`
    /// when the store failed (logged; the stream goes on at the next look).
    async fn messages(&mut self) -> Option<Option<BytesMut>> {
        let messages = match self.state.store.messages(&self.id, self.after, 100).await {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, "cannot read a followed conversation's messages");
                return Some(None);
            }
        };
        let mut batch = BytesMut::new();
        for message in &messages {
            self.after = self.after.max(message.seq);
            if message.author == Author::Operator {
                let data = serde_json::to_string(&event_of(message)).unwrap_or_default();
                named_event(&mut batch, "message", Some(message.seq), &data);
            }
        }
        Some(Some(batch))
    }
}

/// One SSE event with a name (the data is one line of JSON).
fn named_event(batch: &mut BytesMut, name: &str, id: Option<i64>, data: &str) {
    batch.put_slice(b"event: ");
    batch.put_slice(name.as_bytes());
    batch.put_u8(b'\n');
    if let Some(id) = id {
        batch.put_slice(format!("id: {id}\n").as_bytes());
    }
    batch.put_slice(b"data: ");
    batch.put_slice(data.as_bytes());
    batch.put_slice(b"\n\n");
}

/// The signature of a shared link to conversation `id` until `expires` (unix seconds).
fn link_signature(secret: &[u8], id: &str, expires: i64) -> String {
    hmac_hex(secret, &[id.as_bytes(), expires.to_string().as_bytes()])
}

/// A link that opens conversation `id` read-only for `conversations.link_ttl_hours`, and when
/// it expires: absolute under `server.public_url` when that is set, a path otherwise.
/// The signed links of a `conversation.handoff` event, under the URL operators reach the
/// admin listener at (`admin.public_url`; `server.public_url` when the admin API shares the
/// public listener; relative otherwise).
fn shared_link(state: &AppState, id: &str) -> SharedLink {
    let hours = i64::from(state.config.conversations.link_ttl_hours);
    let expires = crate::unix_now_ms() / 1000 + hours * 3600;
    let signature = link_signature(&state.link_secret, id, expires);
    let base = state.config.admin_public_url().unwrap_or_default();
    let query = format!("expires={expires}&sig={signature}");
    SharedLink {
        console: format!("{base}/console/#/shared/{id}?{query}"),
        api: format!("{base}/admin/v1/shared/conversations/{id}?{query}"),
        expires,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SharedQuery {
    expires: i64,
    sig: String,
}

/// `GET /admin/v1/shared/conversations/{id}?expires=…&sig=…`: the conversation, read-only,
/// for whoever holds an unexpired signed link (no admin token).
async fn shared(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<SharedQuery>,
) -> Result<Json<ConversationView>, ApiError> {
    let id = conversation_id(&id)?;
    let expected = link_signature(&state.link_secret, id, query.expires);
    let valid: bool = expected.as_bytes().ct_eq(query.sig.as_bytes()).into();
    if !valid || query.expires < crate::unix_now_ms() / 1000 {
        return Err(ApiError::PermissionDenied {
            code: "invalid_link",
            message: "this link is not valid or has expired".into(),
        });
    }
    full_view(&state, id).await.map(Json)
}

fn conversation_view(conversation: &Conversation) -> ConversationView {
    ConversationView {
        id: conversation.id.clone(),
        site_id: conversation.site_id.clone(),
        visitor: conversation.visitor.clone(),
        page_url: conversation.page_url.clone(),
        model: conversation.model.clone(),
        started_at_ms: conversation.started_at_ms,
        updated_at_ms: conversation.updated_at_ms,
        messages_count: conversation.messages,
        input_tokens: conversation.input_tokens,
        output_tokens: conversation.output_tokens,
        cost_micros: conversation.cost_micros,
        outcome: conversation.outcome.map(|o| o.as_str().to_owned()),
        holder: conversation.holder.as_str().to_owned(),
        handoff_at_ms: conversation.handoff_at_ms,
        feedback: FeedbackCounts { up: conversation.feedback_up, down: conversation.feedback_down },
        messages: None,
    }
}

fn message_view(message: &Message) -> MessageView {
    MessageView {
        seq: message.seq,
        author: message.author.as_str().to_owned(),
        content: message.content.clone(),
        at: message.at_ms,
        request_id: message.request_id.clone(),
        rating: message.rating.map(|r| r.as_str().to_owned()),
        comment: message.comment.clone(),
    }
}

/// Messages per page of `GET /admin/v1/conversations/{id}`.
const MESSAGES_PAGE: u32 = 1000;

/// A conversation with its messages (the first 1,000 after `after`).
async fn full_view(state: &AppState, id: &str) -> Result<ConversationView, ApiError> {
    let store = state.store.as_ref();
    let conversation = store.conversation(id).await.map_err(ApiError::internal)?;
    let conversation = conversation.ok_or_else(|| not_found("conversation", id))?;
    let messages = store.messages(id, 0, MESSAGES_PAGE).await.map_err(ApiError::internal)?;
    let mut view = conversation_view(&conversation);
    view.messages = Some(messages.iter().map(message_view).collect());
    Ok(view)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    site: Option<String>,
    visitor: Option<String>,
    /// `bot`, `waiting` or `person`.
    holder: Option<String>,
    /// `up` or `down`: with at least one such rating.
    rating: Option<String>,
    /// Text in any message.
    q: Option<String>,
    /// Updated within this many days.
    days: Option<u32>,
    limit: Option<u32>,
    /// `next` of the previous page.
    cursor: Option<String>,
}

const MAX_PAGE: u32 = 200;

/// `GET /admin/v1/conversations`: newest activity first, a page at a time.
async fn list(
    _: Admin,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page<ConversationView>>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid("invalid_limit", format!("`limit` is 1 to {MAX_PAGE}")));
    }
    let holder = query
        .holder
        .as_deref()
        .map(|h| {
            Holder::from_name(h).ok_or_else(|| {
                ApiError::invalid("invalid_holder", "`holder` is bot, waiting or person")
            })
        })
        .transpose()?;
    let rating = query
        .rating
        .as_deref()
        .map(|r| {
            Rating::from_name(r)
                .ok_or_else(|| ApiError::invalid("invalid_rating", "`rating` is up or down"))
        })
        .transpose()?;
    let before = query
        .cursor
        .as_deref()
        .map(|cursor| {
            cursor
                .split_once('.')
                .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_owned())))
                .ok_or_else(|| {
                    ApiError::invalid("invalid_cursor", "`cursor` is the `next` of a page")
                })
        })
        .transpose()?;
    let text = query.q.map(|q| q.trim().to_owned()).filter(|q| !q.is_empty());
    if text.as_ref().is_some_and(|q| q.len() > 200) {
        return Err(ApiError::invalid("invalid_query", "`q` is at most 200 bytes"));
    }
    let since_ms = query.days.map(|days| {
        crate::unix_now_ms().saturating_sub(i64::from(days).saturating_mul(86_400_000))
    });
    let filter = ConversationFilter {
        site_id: query.site,
        visitor: query.visitor,
        holder,
        rating,
        text,
        since_ms,
        before,
        limit,
    };
    let page = state.store.list_conversations(&filter).await.map_err(ApiError::internal)?;
    let next = (page.len() == usize::try_from(limit).unwrap_or(usize::MAX))
        .then(|| page.last().map(|c| format!("{}.{}", c.updated_at_ms, c.id)))
        .flatten();
    Ok(Json(Page::new(page.iter().map(conversation_view).collect(), next)))
}

async fn show(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ConversationView>, ApiError> {
    full_view(&state, conversation_id(&id)?).await.map(Json)
}

async fn delete_one(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = conversation_id(&id)?;
    if state.store.delete_conversation(id).await.map_err(ApiError::internal)? {
        state.live.changed(id);
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found("conversation", id))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EraseQuery {
    visitor: String,
    site: Option<String>,
}

/// `DELETE /admin/v1/conversations?visitor=HASH[&site=ID]`: erases a visitor's conversations.
async fn erase_visitor(
    _: Admin,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<EraseQuery>,
) -> Result<Json<Value>, ApiError> {
    let visitor = query.visitor.trim();
    if visitor.is_empty() {
        return Err(ApiError::invalid("invalid_visitor", "`visitor` is the visitor's hash"));
    }
    let deleted = state
        .store
        .delete_visitor(visitor, query.site.as_deref())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({ "deleted": deleted })))
}

/// `POST /admin/v1/conversations/{id}/messages`: a person's reply. The person holds the
/// conversation from then on (the bot stays quiet) until it is released.
async fn operator_message(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<OperatorMessage>,
) -> Result<Response, ApiError> {
    let id = conversation_id(&id)?;
    let store = state.store.as_ref();
    let conversation = store.conversation(id).await.map_err(ApiError::internal)?;
    let conversation = conversation.ok_or_else(|| not_found("conversation", id))?;
    let max = usize::try_from(state.config.limits.max_message_bytes).unwrap_or(usize::MAX);
    let content = message_text(&body.content, "content", max)?;
    let now = crate::unix_now_ms();
    store.set_holder(id, Holder::Person, now).await.map_err(ApiError::internal)?;
    let message = NewMessage {
        conversation_id: id.to_owned(),
        site_id: conversation.site_id,
        author: Author::Operator,
        content,
        at_ms: now,
        visitor: None,
        page_url: None,
    };
    let added = store.add_message(&message).await.map_err(ApiError::internal)?;
    let added = added.ok_or_else(|| not_found("conversation", id))?;
    state.live.changed(id);
    Ok((StatusCode::CREATED, Json(message_view(&added))).into_response())
}

/// `POST /admin/v1/conversations/{id}/release`: the bot answers again.
async fn release(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = conversation_id(&id)?;
    let released = state
        .store
        .set_holder(id, Holder::Bot, crate::unix_now_ms())
        .await
        .map_err(ApiError::internal)?;
    if !released {
        return Err(not_found("conversation", id));
    }
    state.live.changed(id);
    Ok(Json(json!({ "holder": Holder::Bot.as_str() })))
}

/// `PATCH /admin/v1/sites/{id}/conversations`: the fields given change, the others stay.
async fn change_settings(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ConversationSettingsPatch>,
) -> Result<Json<Value>, ApiError> {
    let change = ConversationsChange {
        transcripts: body.transcripts,
        retention_days: body.retention_days,
        mask_contacts: body.mask_contacts,
        notice: match body.notice {
            None => Change::Keep,
            Some(None) => Change::Clear,
            Some(Some(text)) => Change::Set(text),
        },
        handoff: body.handoff,
    };
    match sites::change_conversations(state.store.as_ref(), &id, change).await {
        Ok(Some(site)) => Ok(Json(sites::site_view(&site))),
        Ok(None) => Err(not_found("site", &id)),
        Err(SiteError::Invalid { field, problem }) => {
            Err(ApiError::invalid("invalid_setting", format!("{field}: {problem}")))
        }
        Err(SiteError::Store(error)) => Err(ApiError::internal(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_signature_covers_the_conversation_and_the_expiry() {
        let secret = b"secret";
        let signature = link_signature(secret, "c_0123456789abcdef", 100);
        assert_eq!(signature.len(), 64);
        assert_ne!(signature, link_signature(secret, "c_0123456789abcdeg", 100));
        assert_ne!(signature, link_signature(secret, "c_0123456789abcdef", 101));
        assert_ne!(signature, link_signature(b"other", "c_0123456789abcdef", 100));
    }

    #[test]
    fn message_texts_are_trimmed_and_checked() {
        assert_eq!(message_text("  hi\n there ", "content", 20).unwrap(), "hi\n there");
        assert!(message_text("   ", "content", 20).is_err());
        assert!(message_text("x".repeat(21).as_str(), "content", 20).is_err());
        assert!(message_text("bell\u{7}", "content", 20).is_err());
    }
}
