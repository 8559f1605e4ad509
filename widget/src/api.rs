//! Talking to the relay: the widget config, and a streamed chat completion read chunk by chunk
//! through `fetch`'s body reader, followed again after a lost connection when the relay names
//! it (`X-Confab-Stream`), from the last event received. For a site that keeps conversations:
//! feedback on answers, asking for a person, what the visitor says to that person, and the
//! person's replies as they come (an SSE stream read the same way, followed again while the
//! person holds the conversation).

use std::cell::{Cell, RefCell};

use confab_protocol::sse::SseEvent;
use confab_protocol::{
    CONVERSATION_HEADER, ChatMessage, ConversationEvent, ConversationsConfig, PAGE_HEADER,
    WidgetConfig, WidgetTheme,
};
use js_sys::{Array, Promise, Reflect, Uint8Array};
use leptos::prelude::{document, window};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortSignal, ReadableStreamDefaultReader, RequestInit, Response};

use crate::conversation::{self, Holder, Rating};
use crate::json;
use crate::sources::{self, SourceLink};
use crate::text::{self, Strings, decimal};
use confab_protocol::sse::SseParser;

/// Why an answer did not arrive, in the words a visitor sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatError {
    /// The visitor pressed stop.
    Aborted,
    RateLimited {
        retry_after: Option<u32>,
    },
    BudgetExhausted,
    UpstreamDown,
    Offline,
    /// The site requires signed-in visitors and this one is not (or no longer) verified.
    NotVerified {
        expired: bool,
    },
    /// The message is longer than the relay accepts (`limit` UTF-8 bytes).
    TooLong {
        limit: usize,
    },
    /// A person holds the conversation: the model does not answer it (`409
    /// conversation_with_person`).
    WithPerson,
    /// The relay answered something the widget cannot read.
    Unexpected,
    /// A failure the relay did not explain: its HTTP status.
    Http(u16),
    /// The relay's own message (in English).
    Other(String),
}

impl ChatError {
    /// What the visitor is told, in the chat's language.
    pub fn message(&self, strings: &Strings) -> String {
        match self {
            Self::Aborted => strings.get(text::STOPPED),
            Self::RateLimited { retry_after: Some(wait) } => {
                strings.with(text::RATE_LIMITED_WAIT, &decimal(u64::from(*wait)))
            }
            Self::RateLimited { retry_after: None } => strings.get(text::RATE_LIMITED),
            Self::BudgetExhausted => strings.get(text::BUDGET_EXHAUSTED),
            Self::UpstreamDown => strings.get(text::UPSTREAM_DOWN),
            Self::Offline => strings.get(text::OFFLINE),
            Self::NotVerified { expired: true } => strings.get(text::SESSION_EXPIRED),
            Self::NotVerified { expired: false } => strings.get(text::SIGN_IN),
            Self::TooLong { limit } => strings.with(text::TOO_LONG, &decimal(*limit as u64)),
            Self::WithPerson => strings.get(text::WITH_PERSON_NOW),
            Self::Unexpected => strings.get(text::UNEXPECTED),
            Self::Http(status) => strings.with(text::HTTP_ERROR, &decimal(u64::from(*status))),
            Self::Other(message) => message.clone(),
        }
    }

    /// The error for a failed response: its status, `Retry-After`, and the relay's error
    /// envelope (`{"error": {"message", "type", "code"}}`).
    fn from_envelope(status: u16, retry_after: Option<u32>, body: &str) -> Self {
        let error = json::parse(body).map(|v| json::get(&v, "error")).unwrap_or_default();
        match (status, json::string(&error, "code").as_deref()) {
            (429, _) => Self::RateLimited { retry_after },
            (401, Some("expired_visitor_token")) => Self::NotVerified { expired: true },
            (401, Some(code))
                if code.ends_with("visitor_token") || code == "visitor_token_required" =>
            {
                Self::NotVerified { expired: false }
            }
            (402, _) | (_, Some("insufficient_quota")) => Self::BudgetExhausted,
            (409, Some("conversation_with_person")) => Self::WithPerson,
            // A lost answer that can no longer be followed.
            (502..=504, _) | (_, Some("stream_not_found")) => Self::UpstreamDown,
            _ => json::string(&error, "message").map_or(Self::Http(status), Self::Other),
        }
    }
}

async fn fetch(url: &str, init: &RequestInit) -> Result<Response, ChatError> {
    let window = web_sys::window().ok_or(ChatError::Offline)?;
    let promise = window.fetch_with_str_and_init(url, init);
    match JsFuture::from(promise).await {
        Ok(response) => Ok(response.unchecked_into()),
        Err(error) if is_abort(&error) => Err(ChatError::Aborted),
        Err(_) => Err(ChatError::Offline),
    }
}

fn is_abort(error: &JsValue) -> bool {
    Reflect::get(error, &"name".into()).ok().and_then(|n| n.as_string()).as_deref()
        == Some("AbortError")
}

async fn error_of(response: &Response) -> ChatError {
    let retry_after = response
        .headers()
        .get("Retry-After")
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse::<u32>().ok());
    let body = match response.text() {
        Ok(promise) => JsFuture::from(promise).await.ok().and_then(|t| t.as_string()),
        Err(_) => None,
    };
    ChatError::from_envelope(response.status(), retry_after, body.as_deref().unwrap_or_default())
}

/// The body of a successful response, or the error a failed one stands for.
async fn text_of(response: Response) -> Result<String, ChatError> {
    if !response.ok() {
        return Err(error_of(&response).await);
    }
    let text = JsFuture::from(response.text().map_err(|_| ChatError::Offline)?)
        .await
        .map_err(|_| ChatError::Offline)?;
    Ok(text.as_string().unwrap_or_default())
}

fn unexpected() -> ChatError {
    ChatError::Unexpected
}

/// `GET /v1/widget/config`.
pub async fn widget_config(relay: &str, key: &str) -> Result<WidgetConfig, ChatError> {
    let init = Caller { relay, key, visitor: None }.request("GET", &[], None)?;
    let response = fetch(&[relay, "/v1/widget/config"].concat(), &init).await?;
    widget_config_from(&text_of(response).await?).ok_or_else(unexpected)
}

/// The fields of `GET /v1/widget/config`'s answer (`WidgetConfig` on the relay's side).
fn widget_config_from(text: &str) -> Option<WidgetConfig> {
    let config = json::parse(text)?;
    Some(WidgetConfig {
        title: json::string(&config, "title")?,
        greeting: json::string(&config, "greeting")?,
        suggestions: json::items(&config, "suggestions")
            .iter()
            .filter_map(JsValue::as_string)
            .collect(),
        theme: WidgetTheme {
            primary_color: json::string(&json::get(&config, "theme"), "primary_color"),
        },
        max_message_bytes: json::get(&config, "max_message_bytes").as_f64()? as u32,
        conversations: conversations_from(&json::get(&config, "conversations")),
    })
}

/// `WidgetConfig.conversations`: present (an object with a `notice`) when the site keeps
/// transcripts.
fn conversations_from(value: &JsValue) -> Option<ConversationsConfig> {
    Some(ConversationsConfig {
        notice: json::string(value, "notice")?,
        handoff: json::get(value, "handoff").as_bool() == Some(true),
    })
}

/// The body of a streamed chat completion request: `{"messages": [...], "stream": true}` (the
/// site's policy on the relay picks the model and everything else).
fn chat_request(messages: &[ChatMessage]) -> String {
    let list: Array = messages
        .iter()
        .map(|m| {
            json::object(&[
                ("role", m.role.as_str().into()),
                ("content", m.content.as_str().into()),
            ])
        })
        .collect();
    json::stringify(&json::object(&[("messages", list.into()), ("stream", true.into())]))
}

/// What a chunk of an answer adds to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta<'a> {
    /// Text of the answer.
    Text(&'a str),
    /// The site's documents it is grounded in (see `sources`).
    Sources(Vec<SourceLink>),
}

/// The text a chunk (`chat.completion.chunk`) adds to the answer.
fn chunk_text(data: &str) -> String {
    let Some(chunk) = json::parse(data) else { return String::new() };
    json::items(&chunk, "choices")
        .iter()
        .filter_map(|choice| json::string(&json::get(choice, "delta"), "content"))
        .collect()
}

/// Who is asking: the relay, the site's key, and the visitor's token if the page gave one.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub relay: &'a str,
    pub key: &'a str,
    pub visitor: Option<&'a str>,
}

impl Caller<'_> {
    /// A request to the relay as this caller, with `more` headers, aborted by `signal` if one is
    /// given.
    fn request(
        &self,
        method: &str,
        more: &[(&str, &str)],
        signal: Option<&AbortSignal>,
    ) -> Result<RequestInit, ChatError> {
        let headers = web_sys::Headers::new().map_err(|_| ChatError::Offline)?;
        let _ = headers.set("Authorization", &["Bearer ", self.key].concat());
        for (name, value) in
            self.visitor.map(|token| ("X-Confab-Visitor", token)).iter().chain(more)
        {
            let _ = headers.set(name, value);
        }
        let init = RequestInit::new();
        init.set_method(method);
        init.set_headers(&headers);
        init.set_signal(signal);
        Ok(init)
    }
}

/// Streams an answer, calling `on_head` with the relay's name for it (`X-Confab-Stream`) and
/// its request id (`X-Request-Id`) when it gives them, and `on_delta` with each piece of text as
/// it arrives, and with the sources it is grounded in when the relay names them. A named
/// answer survives a lost connection: it is followed again from the last
/// event received (see [`follow`]). With `conversation` (a site that keeps transcripts), the
/// request names the conversation and the page it is asked from; without, it is what it always
/// was.
pub async fn stream_chat(
    caller: Caller<'_>,
    messages: Vec<ChatMessage>,
    conversation: Option<&str>,
    signal: &AbortSignal,
    on_head: impl FnOnce(Option<&str>, Option<&str>),
    mut on_delta: impl FnMut(Delta<'_>),
) -> Result<(), ChatError> {
    let page;
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(id) = conversation {
        page = conversation::page_url();
        headers.extend([(CONVERSATION_HEADER, id), (PAGE_HEADER, page.as_str())]);
    }
    let init = caller.request("POST", &headers, Some(signal))?;
    init.set_body(&JsValue::from_str(&chat_request(&messages)));
    let response = fetch(&[caller.relay, "/v1/chat/completions"].concat(), &init).await?;
    if !response.ok() {
        return Err(error_of(&response).await);
    }
    let header = |name: &str| response.headers().get(name).ok().flatten();
    let stream = header("X-Confab-Stream");
    on_head(stream.as_deref(), header("X-Request-Id").as_deref());
    let Some(stream) = stream else {
        // The relay keeps no replay of it: read it once, as it comes.
        return read(response, &mut 0, None, &mut on_delta).await.map_err(Read::error);
    };
    follow(caller, &stream, Some(response), signal, &mut on_delta).await
}

/// Follows the answer the relay named `stream` from its first event: the page was reloaded
/// while it streamed.
pub async fn resume_chat(
    caller: Caller<'_>,
    stream: &str,
    signal: &AbortSignal,
    mut on_delta: impl FnMut(Delta<'_>),
) -> Result<(), ChatError> {
    follow(caller, stream, None, signal, &mut on_delta).await
}

/// Stops the answer `stream` on the relay, so that its generation ends too (the stop button).
pub async fn cancel(caller: Caller<'_>, stream: &str) {
    if let Ok(init) = caller.request("POST", &[], None) {
        let _ =
            fetch(&[caller.relay, "/v1/chat/streams/", stream, "/cancel"].concat(), &init).await;
    }
}

/// POSTs `body` (JSON) as `caller` to the relay's `path` (given in pieces): the answer's body.
async fn post(caller: Caller<'_>, path: &[&str], body: &str) -> Result<String, ChatError> {
    // Every such call is about a conversation, and may be the one that makes it on the relay
    // (a hand-off before the first answer is written): it names the page, as a chat request does.
    let page = conversation::page_url();
    let headers = [("Content-Type", "application/json"), (PAGE_HEADER, page.as_str())];
    let init = caller.request("POST", &headers, None)?;
    init.set_body(&JsValue::from_str(body));
    let mut url = caller.relay.to_owned();
    path.iter().for_each(|piece| url.push_str(piece));
    text_of(fetch(&url, &init).await?).await
}

/// The body of `POST /v1/feedback` (a `FeedbackRequest`): the comment, if any, cut to
/// [`conversation::MAX_COMMENT_CHARS`].
fn feedback_request(
    conversation: &str,
    message: &str,
    rating: Rating,
    comment: Option<&str>,
) -> String {
    let mut fields = vec![
        ("conversation", conversation.into()),
        ("message", message.into()),
        ("rating", rating.as_str().into()),
    ];
    if let Some(comment) =
        comment.map(|c| conversation::comment(c.trim())).filter(|c| !c.is_empty())
    {
        fields.push(("comment", comment.into()));
    }
    json::stringify(&json::object(&fields))
}

/// `POST /v1/feedback`: the visitor's verdict on the answer `message` (its request id).
pub async fn feedback(
    caller: Caller<'_>,
    conversation: &str,
    message: &str,
    rating: Rating,
    comment: Option<&str>,
) -> Result<(), ChatError> {
    let body = feedback_request(conversation, message, rating, comment);
    post(caller, &["/v1/feedback"], &body).await.map(drop)
}

/// `POST /v1/conversations/{id}/handoff`: asks for a person; who holds the conversation now.
pub async fn hand_off(caller: Caller<'_>, conversation: &str) -> Result<Holder, ChatError> {
    let body = post(caller, &["/v1/conversations/", conversation, "/handoff"], "{}").await?;
    holder_from(&body).ok_or_else(unexpected)
}

/// A `HolderEvent`'s holder.
fn holder_from(text: &str) -> Option<Holder> {
    Holder::from_name(&json::string(&json::parse(text)?, "holder")?)
}

/// The body of `POST /v1/conversations/{id}/messages` (a `VisitorMessage`).
fn visitor_message(content: &str) -> String {
    json::stringify(&json::object(&[("content", content.into())]))
}

/// `POST /v1/conversations/{id}/messages`: what the visitor says to the person holding the
/// conversation.
pub async fn tell_person(
    caller: Caller<'_>,
    conversation: &str,
    content: &str,
) -> Result<(), ChatError> {
    let body = visitor_message(content);
    post(caller, &["/v1/conversations/", conversation, "/messages"], &body).await.map(drop)
}

/// What a conversation's events tell the widget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Live {
    /// Who holds the conversation now (the first event of every connection).
    Holder(Holder),
    /// A message of the conversation (by a person: the relay sends no other).
    Message(ConversationEvent),
}

/// An event of `GET /v1/conversations/{id}/events`: `holder` with a `HolderEvent`, `message`
/// with a `ConversationEvent`. Anything else is not for the widget.
fn live_event(event: &SseEvent) -> Option<Live> {
    let data = json::parse(&event.data)?;
    match event.event.as_deref() {
        Some("holder") => holder_from(&event.data).map(Live::Holder),
        None | Some("message") => Some(Live::Message(ConversationEvent {
            seq: json::get(&data, "seq").as_f64()? as i64,
            author: json::string(&data, "author")?,
            content: json::string(&data, "content")?,
            at: json::get(&data, "at").as_f64().unwrap_or_default() as i64,
        })),
        _ => None,
    }
}

/// Follows the events of `conversation` from the message after `seq` (moving `seq` on as
/// messages arrive, so that none is shown twice), handing each to `on_event` until it returns
/// `false` (`Ok`) or `signal` is aborted. A lost connection is followed again, with
/// [`backoff_ms`] between failures and at once when the browser is back online or the page is
/// shown again, for as long as it takes; a refusal (4xx) ends it.
pub async fn follow_conversation(
    caller: Caller<'_>,
    conversation: &str,
    seq: &Cell<i64>,
    signal: &AbortSignal,
    on_event: &mut dyn FnMut(Live) -> bool,
) -> Result<(), ChatError> {
    let mut failures = 0;
    loop {
        if failures > 0 {
            pause(backoff_ms(failures)).await;
        }
        if signal.aborted() {
            return Err(ChatError::Aborted);
        }
        let init = caller.request("GET", &[], Some(signal))?;
        let after = decimal(seq.get() as u64);
        let url =
            [caller.relay, "/v1/conversations/", conversation, "/events?after=", &after].concat();
        match fetch(&url, &init).await {
            Ok(response) if response.ok() => {
                let mut heard = false;
                let read = read_events(response, Some(&nudged()), &mut |event| {
                    let live = live_event(&event)?;
                    heard = true;
                    if let Live::Message(message) = &live {
                        if message.seq <= seq.get() {
                            return None;
                        }
                        seq.set(message.seq);
                    }
                    (!on_event(live)).then_some(Ok(()))
                })
                .await;
                match read {
                    Ok(()) => return Ok(()),
                    Err(Read::Ended(error)) => return Err(error),
                    // A connection that worked and was lost is followed again soon; one that
                    // never said anything backs off further.
                    Err(Read::Lost(_)) => failures = if heard { 1 } else { failures + 1 },
                    Err(Read::Nudged) => failures = 0,
                }
            }
            Ok(response) if response.status() < 500 => return Err(error_of(&response).await),
            Err(ChatError::Aborted) => return Err(ChatError::Aborted),
            Err(_) if offline() => failures = failures.max(5),
            _ => failures += 1,
        }
    }
}

/// How reading an answer's response ended, short of its end.
enum Read {
    /// For good: an `error` event, or the visitor stopped it.
    Ended(ChatError),
    /// The connection was lost (what the visitor is told if it cannot be followed again).
    Lost(ChatError),
    /// The page may have a new connection (see [`nudged`]): this one was given up.
    Nudged,
}

impl Read {
    fn error(self) -> ChatError {
        match self {
            Self::Ended(error) | Self::Lost(error) => error,
            Self::Nudged => ChatError::Offline,
        }
    }
}

/// Attempts to follow a lost answer again before giving up, waiting [`backoff_ms`] between
/// failed ones: about a minute and a half in all (while the browser is offline, attempts do not
/// count).
const MAX_ATTEMPTS: u32 = 16;

/// The wait before the `failures + 1`th attempt: half a second, doubling up to 8 s.
fn backoff_ms(failures: u32) -> i32 {
    500 << failures.saturating_sub(1).min(4)
}

/// Reads the answer `stream` from `response`, and whenever its connection is lost, follows it
/// again from the relay from the event after the last one received (`Last-Event-ID`): at once,
/// then with [`backoff_ms`] between failures, and at once when the browser is back online or the
/// page is shown again. Every event is shown once, however often it is followed again.
async fn follow(
    caller: Caller<'_>,
    stream: &str,
    mut response: Option<Response>,
    signal: &AbortSignal,
    on_delta: &mut dyn FnMut(Delta<'_>),
) -> Result<(), ChatError> {
    let (mut last, mut failures) = (0, 0);
    loop {
        if let Some(answer) = response.take() {
            let before = last;
            match read(answer, &mut last, Some(&nudged()), on_delta).await {
                Ok(()) => return Ok(()),
                Err(Read::Ended(error)) => return Err(error),
                Err(Read::Lost(_)) if last == before => failures += 1,
                Err(Read::Lost(_)) => failures = 0,
                Err(Read::Nudged) => {}
            }
        }
        if failures >= MAX_ATTEMPTS {
            return Err(ChatError::Offline);
        }
        if failures > 0 {
            pause(backoff_ms(failures)).await;
        }
        if signal.aborted() {
            return Err(ChatError::Aborted);
        }
        let init = caller.request("GET", &[("Last-Event-ID", &decimal(last))], Some(signal))?;
        match fetch(&[caller.relay, "/v1/chat/streams/", stream].concat(), &init).await {
            Ok(answer) if answer.ok() => response = Some(answer),
            // Gone (no longer kept, or never this visitor's): nothing more will come.
            Ok(answer) => return Err(error_of(&answer).await),
            Err(ChatError::Aborted) => return Err(ChatError::Aborted),
            // Offline: wait for `online` (or the longest backoff), however long it takes; the
            // relay says when the stream is no longer there.
            Err(_) if offline() => failures = failures.clamp(5, MAX_ATTEMPTS - 1),
            Err(_) => failures += 1,
        }
    }
}

/// Whether the browser knows it has no network (`navigator.onLine` is false).
fn offline() -> bool {
    let online = Reflect::get(&js_sys::global(), &"navigator".into())
        .and_then(|navigator| Reflect::get(&navigator, &"onLine".into()));
    online.ok().and_then(|online| online.as_bool()) == Some(false)
}

/// Reads an answer's events from `response`, skipping those numbered up to `last` (already
/// shown) and moving `last` on. Given `nudge`, a nudge gives the connection up.
async fn read(
    response: Response,
    last: &mut u64,
    nudge: Option<&Promise>,
    on_delta: &mut dyn FnMut(Delta<'_>),
) -> Result<(), Read> {
    read_events(response, nudge, &mut |event| {
        if let Some(seq) = event.id.as_deref().and_then(|id| id.parse::<u64>().ok()) {
            if seq <= *last {
                return None;
            }
            *last = seq;
        }
        if event.is("error") {
            return Some(Err(Read::Ended(ChatError::UpstreamDown)));
        }
        if event.data == confab_protocol::DONE_SENTINEL {
            return Some(Ok(()));
        }
        let text = chunk_text(&event.data);
        if !text.is_empty() {
            on_delta(Delta::Text(&text));
        } else if let Some(sources) = sources::from_chunk(&event.data) {
            on_delta(Delta::Sources(sources));
        }
        None
    })
    .await
}

/// Reads the SSE events of `response` into `on_event` until it returns how reading ends (or
/// the body ends: the connection was lost). Given `nudge`, a nudge gives the connection up.
async fn read_events(
    response: Response,
    nudge: Option<&Promise>,
    on_event: &mut dyn FnMut(SseEvent) -> Option<Result<(), Read>>,
) -> Result<(), Read> {
    let body = response.body().ok_or(Read::Lost(ChatError::UpstreamDown))?;
    let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut parser = SseParser::default();
    loop {
        let next = match nudge {
            Some(nudge) => Promise::race(&Array::of2(&reader.read(), nudge)),
            None => reader.read(),
        };
        let chunk = match JsFuture::from(next).await {
            // Only a nudge resolves to nothing.
            Ok(chunk) if chunk.is_undefined() => {
                let _ = reader.cancel();
                return Err(Read::Nudged);
            }
            Ok(chunk) => chunk,
            Err(error) if is_abort(&error) => return Err(Read::Ended(ChatError::Aborted)),
            Err(_) => return Err(Read::Lost(ChatError::Offline)),
        };
        if Reflect::get(&chunk, &"done".into()).ok().and_then(|d| d.as_bool()) == Some(true) {
            // The relay always ends a complete answer with [DONE] or an error event, and never
            // ends a conversation's events.
            return Err(Read::Lost(ChatError::UpstreamDown));
        }
        let bytes = Reflect::get(&chunk, &"value".into())
            .map(|v| v.unchecked_into::<Uint8Array>().to_vec())
            .unwrap_or_default();
        for event in parser.push(&bytes) {
            if let Some(end) = on_event(event) {
                let _ = reader.cancel();
                return end;
            }
        }
    }
}

thread_local! {
    /// The resolvers of the [`nudged`] promises not yet resolved, and whether the page's
    /// listeners that call [`nudge`] are installed.
    static NUDGES: RefCell<(bool, Vec<js_sys::Function>)> = const { RefCell::new((false, Vec::new())) };
}

/// Resolves (to `undefined`) at the next [`nudge`]: when the browser is back online, when the
/// page is shown again (a phone unlocked, a tab brought back, where a connection may have died
/// without a word), or when the visitor stops the answer.
fn nudged() -> Promise {
    NUDGES.with(|nudges| {
        let installed = std::mem::replace(&mut nudges.borrow_mut().0, true);
        if !installed {
            // For the page's life: one listener, whatever the number of answers. (A page that is
            // hidden when the network comes back is nudged when it is shown.)
            let when_shown = Closure::<dyn Fn()>::new(|| {
                if !document().hidden() {
                    nudge();
                }
            });
            for event in ["online", "visibilitychange"] {
                let _ = window()
                    .add_event_listener_with_callback(event, when_shown.as_ref().unchecked_ref());
            }
            when_shown.forget();
        }
    });
    Promise::new(&mut |resolve, _| NUDGES.with(|nudges| nudges.borrow_mut().1.push(resolve)))
}

/// Resolves every [`nudged`] promise: whoever waits on one looks at the connection again.
pub fn nudge() {
    let resolvers = NUDGES.with(|nudges| std::mem::take(&mut nudges.borrow_mut().1));
    for resolve in resolvers {
        let _ = resolve.call0(&JsValue::UNDEFINED);
    }
}

/// Waits `ms`, or less if nudged.
async fn pause(ms: i32) {
    let timer = Promise::new(&mut |resolve, _| {
        let _ = window().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
    });
    let _ = JsFuture::from(Promise::race(&Array::of2(&timer, &nudged()))).await;
}

#[cfg(all(test, target_family = "wasm"))]
// clippy's allow-unwrap-in-tests does not recognise #[wasm_bindgen_test] functions.
#[expect(clippy::unwrap_used, reason = "a failing test should panic")]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test]
    fn the_request_carries_the_conversation_and_asks_for_a_stream() {
        let body = chat_request(&[
            ChatMessage::new(confab_protocol::Role::User, "hi \"there\""),
            ChatMessage::new(confab_protocol::Role::Assistant, "ok"),
        ]);
        let parsed: confab_protocol::ChatRequest = serde_json::from_str(&body).unwrap();
        assert!(parsed.stream);
        assert_eq!(parsed.messages[0].content, "hi \"there\"");
        assert_eq!(parsed.messages[1].role, confab_protocol::Role::Assistant);
        assert_eq!(parsed.model, None);
    }

    #[wasm_bindgen_test]
    fn chunk_text_reads_the_deltas_and_ignores_anything_else() {
        let chunk =
            r#"{"choices":[{"index":0,"delta":{"content":"Hel"}},{"delta":{"content":"lo"}}]}"#;
        assert_eq!(chunk_text(chunk), "Hello");
        for other in [r#"{"choices":[{"delta":{"role":"assistant"}}]}"#, "{}", "[]", "nope", "null"]
        {
            assert_eq!(chunk_text(other), "", "{other}");
        }
    }

    #[wasm_bindgen_test]
    fn errors_are_classified_by_status_and_code() {
        let envelope = |code: &str| {
            format!(r#"{{"error":{{"message":"m {code}","type":"t","code":"{code}"}}}}"#)
        };
        assert_eq!(
            ChatError::from_envelope(429, Some(17), &envelope("rate_limit_exceeded")),
            ChatError::RateLimited { retry_after: Some(17) }
        );
        assert_eq!(
            ChatError::from_envelope(403, None, &envelope("insufficient_quota")),
            ChatError::BudgetExhausted
        );
        assert_eq!(
            ChatError::from_envelope(502, None, "<html>bad gateway"),
            ChatError::UpstreamDown
        );
        assert_eq!(
            ChatError::from_envelope(400, None, &envelope("invalid_value")),
            ChatError::Other("m invalid_value".into())
        );
        assert_eq!(
            ChatError::from_envelope(401, None, &envelope("expired_visitor_token")),
            ChatError::NotVerified { expired: true }
        );
        assert_eq!(
            ChatError::from_envelope(401, None, &envelope("visitor_token_required")),
            ChatError::NotVerified { expired: false }
        );
        assert_eq!(ChatError::from_envelope(500, None, "not json"), ChatError::Http(500));
        assert_eq!(
            ChatError::Http(500).message(&Strings::default()),
            "Something went wrong (HTTP 500)."
        );
    }

    fn chunk(text: &str) -> String {
        format!(r#"{{"choices":[{{"delta":{{"content":"{text}"}}}}]}}"#)
    }

    async fn read_body(body: &str, last: &mut u64) -> (Result<(), Read>, String) {
        let (read, text, _) = read_deltas(body, last).await;
        (read, text)
    }

    /// The text and the sources a body's events give.
    async fn read_deltas(
        body: &str,
        last: &mut u64,
    ) -> (Result<(), Read>, String, Vec<SourceLink>) {
        let response = Response::new_with_opt_str(Some(body)).unwrap();
        let (mut text, mut sources) = (String::new(), Vec::new());
        let read = read(response, last, None, &mut |delta| match delta {
            Delta::Text(piece) => text.push_str(piece),
            Delta::Sources(named) => sources = named,
        })
        .await;
        (read, text, sources)
    }

    #[wasm_bindgen_test]
    async fn the_sources_chunk_names_the_answers_sources_and_adds_no_text() {
        let named = r#"{"choices":[],"confab":{"sources":[{"n":1,"title":"Returns","url":"https://e.example/r"}]}}"#;
        let usage = r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#;
        let body = format!(
            "data: {}\n\ndata: {named}\n\ndata: {usage}\n\ndata: [DONE]\n\n",
            chunk("Within 9 days [1].")
        );
        let (read, text, sources) = read_deltas(&body, &mut 0).await;
        assert!(read.is_ok());
        assert_eq!(text, "Within 9 days [1].");
        assert_eq!(
            sources,
            vec![SourceLink { title: "Returns".into(), href: Some("https://e.example/r".into()) }]
        );
    }

    #[wasm_bindgen_test]
    async fn events_already_shown_are_skipped_and_the_position_moves_on() {
        let body = format!(
            "id: 1\ndata: {}\n\nid: 2\ndata: {}\n\n: keep-alive\n\nid: 3\ndata: {}\n\nid: 4\ndata: [DONE]\n\n",
            chunk("a"),
            chunk("b"),
            chunk("c")
        );
        let mut last = 2;
        let (read, text) = read_body(&body, &mut last).await;
        assert!(read.is_ok());
        assert_eq!((text.as_str(), last), ("c", 4));
    }

    #[wasm_bindgen_test]
    async fn a_cut_connection_is_lost_but_an_error_event_ends_the_answer() {
        let mut last = 0;
        let (read, text) = read_body(&format!("id: 1\ndata: {}\n\n", chunk("a")), &mut last).await;
        assert!(matches!(read, Err(Read::Lost(ChatError::UpstreamDown))));
        assert_eq!((text.as_str(), last), ("a", 1));
        let (read, _) = read_body("id: 2\nevent: error\ndata: {}\n\n", &mut last).await;
        assert!(matches!(read, Err(Read::Ended(ChatError::UpstreamDown))));
        // Without ids (a stream the relay does not keep), every event counts.
        let mut last = 0;
        let body = format!("data: {}\n\ndata: {}\n\ndata: [DONE]\n\n", chunk("x"), chunk("y"));
        let (read, text) = read_body(&body, &mut last).await;
        assert!(read.is_ok());
        assert_eq!((text.as_str(), last), ("xy", 0));
    }

    #[wasm_bindgen_test]
    async fn a_nudge_gives_up_a_connection_that_may_be_dead() {
        // A body that never sends anything.
        let silent = web_sys::ReadableStream::new().unwrap();
        let response = Response::new_with_opt_readable_stream(Some(&silent)).unwrap();
        let nudged = nudged();
        nudge();
        let read = read(response, &mut 0, Some(&nudged), &mut |_| {}).await;
        assert!(matches!(read, Err(Read::Nudged)));
    }

    #[wasm_bindgen_test]
    fn reattaching_backs_off_from_half_a_second_to_eight() {
        let waits: Vec<i32> = (1..=7).map(backoff_ms).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
        let total: i32 = (1..MAX_ATTEMPTS).map(backoff_ms).sum();
        assert!((60_000..120_000).contains(&total), "{total}");
    }

    #[wasm_bindgen_test]
    fn a_stream_that_is_gone_is_an_answer_that_could_not_be_given() {
        let gone = r#"{"error":{"message":"no stream","type":"invalid_request_error","code":"stream_not_found"}}"#;
        assert_eq!(ChatError::from_envelope(404, None, gone), ChatError::UpstreamDown);
    }

    #[wasm_bindgen_test]
    fn the_site_config_is_read_from_the_relays_json() {
        let config = confab_protocol::WidgetConfig {
            conversations: None,
            title: "T".into(),
            greeting: "G".into(),
            suggestions: vec!["a".into(), "b".into()],
            theme: WidgetTheme { primary_color: Some("#123456".into()) },
            max_message_bytes: 16384,
        };
        let text = serde_json::to_string(&config).unwrap();
        assert_eq!(widget_config_from(&text), Some(config));
        assert_eq!(widget_config_from(r#"{"title":"only"}"#), None);
    }

    #[wasm_bindgen_test]
    fn a_site_that_keeps_conversations_says_so_in_its_config() {
        for handoff in [true, false] {
            let config = confab_protocol::WidgetConfig {
                conversations: Some(ConversationsConfig {
                    notice: "This conversation is recorded <b>here</b>.".into(),
                    handoff,
                }),
                title: "T".into(),
                greeting: "G".into(),
                max_message_bytes: 100,
                ..Default::default()
            };
            let text = serde_json::to_string(&config).unwrap();
            assert_eq!(widget_config_from(&text), Some(config));
        }
        let base = r#""title":"T","greeting":"G","max_message_bytes":1"#;
        let read = |more: &str| widget_config_from(&["{", base, more, "}"].concat()).unwrap();
        // Without `handoff`, no person is offered; without a notice, nothing is kept.
        let notice_only = read(r#","conversations":{"notice":"n"}"#).conversations;
        assert_eq!(notice_only, Some(ConversationsConfig { notice: "n".into(), handoff: false }));
        assert_eq!(read("").conversations, None);
        assert_eq!(read(r#","conversations":null"#).conversations, None);
        assert_eq!(read(r#","conversations":{"handoff":true}"#).conversations, None);
    }

    #[wasm_bindgen_test]
    fn feedback_is_a_feedback_request_with_its_comment_cut_to_500_characters() {
        let body =
            feedback_request("c_0123456789abcdef", "req_1", Rating::Down, Some("  too vague "));
        let parsed: confab_protocol::FeedbackRequest = serde_json::from_str(&body).unwrap();
        assert_eq!(
            parsed,
            confab_protocol::FeedbackRequest {
                conversation: "c_0123456789abcdef".into(),
                message: "req_1".into(),
                rating: "down".into(),
                comment: Some("too vague".into()),
            }
        );
        let up: confab_protocol::FeedbackRequest =
            serde_json::from_str(&feedback_request("c_x", "req_2", Rating::Up, Some(" "))).unwrap();
        assert_eq!((up.rating.as_str(), up.comment), ("up", None));
        let long = "é".repeat(700);
        let cut: confab_protocol::FeedbackRequest =
            serde_json::from_str(&feedback_request("c_x", "r", Rating::Down, Some(&long))).unwrap();
        assert_eq!(cut.comment.unwrap().chars().count(), 500);
    }

    #[wasm_bindgen_test]
    fn what_a_visitor_tells_a_person_is_a_visitor_message() {
        let parsed: confab_protocol::VisitorMessage =
            serde_json::from_str(&visitor_message("hi \"Ana\"\n")).unwrap();
        assert_eq!(parsed.content, "hi \"Ana\"\n");
        assert_eq!(holder_from(r#"{"holder":"waiting"}"#), Some(Holder::Waiting));
        assert_eq!(holder_from(r#"{"holder":"someone"}"#), None);
    }

    #[wasm_bindgen_test]
    fn a_conversation_with_a_person_refuses_chat_requests() {
        let refused = r#"{"error":{"message":"a person is answering","type":"invalid_request_error","code":"conversation_with_person"}}"#;
        assert_eq!(ChatError::from_envelope(409, None, refused), ChatError::WithPerson);
    }

    #[wasm_bindgen_test]
    fn a_conversations_events_are_holders_and_messages() {
        let message = confab_protocol::ConversationEvent {
            seq: 4,
            author: "operator".into(),
            content: "Hi, I am <b>Ana</b>".into(),
            at: 1_795_000_000_123,
        };
        let stream = [
            ": keep-alive\n\n",
            "event: holder\ndata: {\"holder\":\"person\"}\n\n",
            "event: message\nid: 4\ndata: ",
            &serde_json::to_string(&message).unwrap(),
            "\n\nevent: holder\ndata: {\"holder\":\"bot\"}\n\n",
            "event: typing\ndata: {}\n\nevent: holder\ndata: nope\n\n",
        ]
        .concat();
        let mut parser = SseParser::default();
        // Split anywhere, as a network does.
        let (head, tail) = stream.as_bytes().split_at(40);
        let events: Vec<Live> =
            [parser.push(head), parser.push(tail)].concat().iter().filter_map(live_event).collect();
        assert_eq!(
            events,
            [Live::Holder(Holder::Person), Live::Message(message), Live::Holder(Holder::Bot)]
        );
    }

    async fn follow_body(body: &str, seq: i64) -> (Result<(), Read>, Vec<Live>, i64) {
        let response = Response::new_with_opt_str(Some(body)).unwrap();
        let seq = Cell::new(seq);
        let mut seen = Vec::new();
        let read = read_events(response, None, &mut |event| {
            let live = live_event(&event)?;
            if let Live::Message(m) = &live {
                if m.seq <= seq.get() {
                    return None;
                }
                seq.set(m.seq);
            }
            let go_on = live != Live::Holder(Holder::Bot);
            seen.push(live);
            (!go_on).then_some(Ok(()))
        })
        .await;
        (read, seen, seq.get())
    }

    #[wasm_bindgen_test]
    async fn a_person_message_already_shown_is_not_shown_again_and_the_bot_ends_the_stream() {
        let event = |seq: i64, content: &str| {
            format!(
                "event: message\nid: {seq}\ndata: {{\"seq\":{seq},\"author\":\"operator\",\"content\":\"{content}\",\"at\":1}}\n\n"
            )
        };
        let body = [
            event(2, "old"),
            event(3, "new"),
            "event: holder\ndata: {\"holder\":\"bot\"}\n\n".into(),
            event(4, "after"),
        ]
        .concat();
        let (read, seen, seq) = follow_body(&body, 2).await;
        assert!(read.is_ok());
        assert_eq!(seq, 3);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(matches!(&seen[0], Live::Message(m) if m.content == "new"));
        // A stream that just ends was lost: it is followed again.
        let (read, seen, _) = follow_body(&event(5, "x"), 3).await;
        assert!(matches!(read, Err(Read::Lost(_))));
        assert_eq!(seen.len(), 1);
    }
}
