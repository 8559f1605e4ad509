//! Talking to the relay: the widget config, and a streamed chat completion read chunk by chunk
//! through `fetch`'s body reader.

use confab_protocol::{ChatMessage, WidgetConfig, WidgetTheme};
use js_sys::{Array, Reflect, Uint8Array};
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
            (502..=504, _) => Self::UpstreamDown,
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

fn headers(key: &str) -> Result<web_sys::Headers, ChatError> {
    let headers = web_sys::Headers::new().map_err(|_| ChatError::Offline)?;
    let _ = headers.set("Authorization", &format!("Bearer {key}"));
    Ok(headers)
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
    let init = RequestInit::new();
    init.set_method("GET");
    let headers = headers(key)?;
    init.set_headers(&headers);
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

/// Streams an answer, calling `on_text` with each piece of text as it arrives.
pub async fn stream_chat(
    caller: Caller<'_>,
    messages: Vec<ChatMessage>,
    signal: &AbortSignal,
    mut on_text: impl FnMut(&str),
) -> Result<(), ChatError> {
    let body = chat_request(&messages);
    let headers = headers(caller.key)?;
    let _ = headers.set("Content-Type", "application/json");
    if let Some(token) = caller.visitor {
        let _ = headers.set("X-Confab-Visitor", token);
    }
    let init = RequestInit::new();
    init.set_method("POST");
    init.set_headers(&headers);
    init.set_body(&JsValue::from_str(&body));
    init.set_signal(Some(signal));
    let response = fetch(&format!("{}/v1/chat/completions", caller.relay), &init).await?;
    if !response.ok() {
        return Err(error_of(&response).await);
    }
    let reader: ReadableStreamDefaultReader =
        response.body().ok_or(ChatError::UpstreamDown)?.get_reader().unchecked_into();
    let mut parser = SseParser::default();
    loop {
        let chunk = match JsFuture::from(reader.read()).await {
            Ok(chunk) => chunk,
            Err(error) if is_abort(&error) => return Err(ChatError::Aborted),
            Err(_) => return Err(ChatError::Offline),
        };
        if Reflect::get(&chunk, &"done".into()).ok().and_then(|d| d.as_bool()) == Some(true) {
            // The relay always ends a complete answer with [DONE] or an error event.
            return Err(ChatError::UpstreamDown);
        }
        let bytes = Reflect::get(&chunk, &"value".into())
            .map(|v| v.unchecked_into::<Uint8Array>().to_vec())
            .unwrap_or_default();
        for event in parser.push(&bytes) {
            if event.is("error") {
                return Err(ChatError::UpstreamDown);
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

    #[wasm_bindgen_test]
    fn the_site_config_is_read_from_the_relays_json() {
        let config = confab_protocol::WidgetConfig {
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
