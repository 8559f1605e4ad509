//! Talking to the relay: the widget config, and a streamed chat completion read chunk by chunk
//! through `fetch`'s body reader.

use confab_protocol::{ChatCompletionChunk, ChatMessage, ChatRequest, ErrorEnvelope, WidgetConfig};
use js_sys::{Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortSignal, ReadableStreamDefaultReader, RequestInit, Response};

use crate::sse::SseParser;

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
            Self::TooLong { limit } => {
                format!("That message is too long: please keep it under {limit} characters.")
            }
            Self::Other(message) => message.clone(),
        }
    }

    fn from_envelope(status: u16, retry_after: Option<u32>, body: &str) -> Self {
        let envelope = serde_json::from_str::<ErrorEnvelope>(body).ok();
        match (status, envelope.as_ref().map(|e| e.error.code.as_str())) {
            (429, _) => Self::RateLimited { retry_after },
            (402, _) | (_, Some("insufficient_quota")) => Self::BudgetExhausted,
            (502..=504, _) => Self::UpstreamDown,
            _ => Self::Other(envelope.map_or_else(
                || format!("Something went wrong (HTTP {status})."),
                |e| e.error.message,
            )),
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
    serde_json::from_str(&text.as_string().unwrap_or_default())
        .map_err(|e| ChatError::Other(format!("Unexpected answer from the relay: {e}")))
}

/// Streams an answer, calling `on_text` with each piece of text as it arrives.
pub async fn stream_chat(
    relay: &str,
    key: &str,
    messages: Vec<ChatMessage>,
    signal: &AbortSignal,
    mut on_text: impl FnMut(&str),
) -> Result<(), ChatError> {
    let request = ChatRequest { messages, stream: true, ..ChatRequest::default() };
    let body = serde_json::to_string(&request).map_err(|e| ChatError::Other(e.to_string()))?;
    let headers = headers(key)?;
    let _ = headers.set("Content-Type", "application/json");
    let init = RequestInit::new();
    init.set_method("POST");
    init.set_headers(&headers);
    init.set_body(&JsValue::from_str(&body));
    init.set_signal(Some(signal));
    let response = fetch(&format!("{relay}/v1/chat/completions"), &init).await?;
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
            if event.event == "error" {
                return Err(ChatError::UpstreamDown);
            }
            if event.data == confab_protocol::DONE_SENTINEL {
                return Ok(());
            }
            if let Ok(chunk) = serde_json::from_str::<ChatCompletionChunk>(&event.data) {
                for choice in &chunk.choices {
                    if let Some(text) = &choice.delta.content {
                        on_text(text);
                    }
                }
            }
        }
    }
}
