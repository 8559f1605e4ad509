//! Talking to the relay: the widget config, and a streamed chat completion read chunk by chunk
//! through `fetch`'s body reader, followed again after a lost connection when the relay names
//! it (`X-Confab-Stream`), from the last event received.

use std::cell::RefCell;

use confab_protocol::{ChatMessage, WidgetConfig, WidgetTheme};
use js_sys::{Array, Promise, Reflect, Uint8Array};
use leptos::prelude::{document, window};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortSignal, ReadableStreamDefaultReader, RequestInit, Response};

use crate::json;
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
    Other(String),
}

impl ChatError {
    pub fn message(&self) -> String {
        match self {
            Self::Aborted => "Stopped.".into(),
            Self::RateLimited { retry_after: Some(s) } => {
                format!("Too many messages right now. Please wait {s} s and try again.")
            }
            Self::RateLimited { retry_after: None } => {
                "Too many messages right now. Please wait a moment and try again.".into()
            }
            Self::BudgetExhausted => {
                "The assistant is unavailable for now (its usage limit is reached).".into()
            }
            Self::UpstreamDown => {
                "The assistant could not answer just now. Please try again.".into()
            }
            Self::Offline => "You seem to be offline. Check your connection and retry.".into(),
            Self::NotVerified { expired: true } => {
                "Your session has expired. Reload the page to keep chatting.".into()
            }
            Self::NotVerified { expired: false } => "Please sign in to chat with us.".into(),
            Self::TooLong { limit } => {
                format!("That message is too long: please keep it under {limit} characters.")
            }
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
            // A lost answer that can no longer be followed.
            (502..=504, _) | (_, Some("stream_not_found")) => Self::UpstreamDown,
            _ => Self::Other(
                json::string(&error, "message")
                    .unwrap_or_else(|| format!("Something went wrong (HTTP {status}).")),
            ),
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

/// `GET /v1/widget/config`.
pub async fn widget_config(relay: &str, key: &str) -> Result<WidgetConfig, ChatError> {
    let init = Caller { relay, key, visitor: None }.request("GET", &[], None)?;
    let response = fetch(&format!("{relay}/v1/widget/config"), &init).await?;
    if !response.ok() {
        return Err(error_of(&response).await);
    }
    let text = JsFuture::from(response.text().map_err(|_| ChatError::Offline)?)
        .await
        .map_err(|_| ChatError::Offline)?;
    widget_config_from(&text.as_string().unwrap_or_default())
        .ok_or_else(|| ChatError::Other("Unexpected answer from the relay.".into()))
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
        conversations: None,
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
        let _ = headers.set("Authorization", &format!("Bearer {}", self.key));
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

/// Streams an answer, calling `on_stream` with the relay's name for it (`X-Confab-Stream`) when
/// it gives one, and `on_text` with each piece of text as it arrives. A named answer survives a
/// lost connection: it is followed again from the last event received (see [`follow`]).
pub async fn stream_chat(
    caller: Caller<'_>,
    messages: Vec<ChatMessage>,
    signal: &AbortSignal,
    on_stream: impl FnOnce(&str),
    mut on_text: impl FnMut(&str),
) -> Result<(), ChatError> {
    let init = caller.request("POST", &[("Content-Type", "application/json")], Some(signal))?;
    init.set_body(&JsValue::from_str(&chat_request(&messages)));
    let response = fetch(&format!("{}/v1/chat/completions", caller.relay), &init).await?;
    if !response.ok() {
        return Err(error_of(&response).await);
    }
    let Some(stream) = response.headers().get("X-Confab-Stream").ok().flatten() else {
        // The relay keeps no replay of it: read it once, as it comes.
        return read(response, &mut 0, None, &mut on_text).await.map_err(Read::error);
    };
    on_stream(&stream);
    follow(caller, &stream, Some(response), signal, &mut on_text).await
}

/// Follows the answer the relay named `stream` from its first event: the page was reloaded
/// while it streamed.
pub async fn resume_chat(
    caller: Caller<'_>,
    stream: &str,
    signal: &AbortSignal,
    mut on_text: impl FnMut(&str),
) -> Result<(), ChatError> {
    follow(caller, stream, None, signal, &mut on_text).await
}

/// Stops the answer `stream` on the relay, so that its generation ends too (the stop button).
pub async fn cancel(caller: Caller<'_>, stream: &str) {
    if let Ok(init) = caller.request("POST", &[], None) {
        let _ = fetch(&format!("{}/v1/chat/streams/{stream}/cancel", caller.relay), &init).await;
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
    on_text: &mut dyn FnMut(&str),
) -> Result<(), ChatError> {
    let (mut last, mut failures) = (0, 0);
    loop {
        if let Some(answer) = response.take() {
            let before = last;
            match read(answer, &mut last, Some(&nudged()), on_text).await {
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
        let init = caller.request("GET", &[("Last-Event-ID", &last.to_string())], Some(signal))?;
        match fetch(&format!("{}/v1/chat/streams/{stream}", caller.relay), &init).await {
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
    on_text: &mut dyn FnMut(&str),
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
            // The relay always ends a complete answer with [DONE] or an error event.
            return Err(Read::Lost(ChatError::UpstreamDown));
        }
        let bytes = Reflect::get(&chunk, &"value".into())
            .map(|v| v.unchecked_into::<Uint8Array>().to_vec())
            .unwrap_or_default();
        for event in parser.push(&bytes) {
            if let Some(seq) = event.id.as_deref().and_then(|id| id.parse::<u64>().ok()) {
                if seq <= *last {
                    continue;
                }
                *last = seq;
            }
            if event.is("error") {
                return Err(Read::Ended(ChatError::UpstreamDown));
            }
            if event.data == confab_protocol::DONE_SENTINEL {
                return Ok(());
            }
            let text = chunk_text(&event.data);
            if !text.is_empty() {
                on_text(&text);
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
        assert_eq!(
            ChatError::from_envelope(500, None, "not json"),
            ChatError::Other("Something went wrong (HTTP 500).".into())
        );
    }

    fn chunk(text: &str) -> String {
        format!(r#"{{"choices":[{{"delta":{{"content":"{text}"}}}}]}}"#)
    }

    async fn read_body(body: &str, last: &mut u64) -> (Result<(), Read>, String) {
        let response = Response::new_with_opt_str(Some(body)).unwrap();
        let mut text = String::new();
        let read = read(response, last, None, &mut |piece| text.push_str(piece)).await;
        (read, text)
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
}
