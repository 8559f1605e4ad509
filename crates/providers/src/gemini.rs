//! Google's Gemini API (`kind = "gemini"`): `models/{model}:streamGenerateContent?alt=sse` for
//! streams and `models/{model}:generateContent` for whole answers, the key in the
//! `x-goog-api-key` header (never in the URL, where proxies and logs would keep it).
//!
//! `base_url` is the API's root with its version, as `kind = "openai"`'s ends in `/v1`:
//! `https://generativelanguage.googleapis.com/v1beta` (or a gateway's equivalent). A URL without
//! a path, with a query, or naming a model's endpoint is refused at start-up.
//!
//! The request: system and developer messages become `systemInstruction`; `user` stays `user`
//! and `assistant` becomes `model`, with consecutive messages of one role merged into one turn
//! (Gemini wants turns to alternate); `max_tokens` becomes `maxOutputTokens` (which bounds the
//! model's thoughts and its answer together, so the relay's reservation at `max_tokens` covers
//! both), `temperature` is clamped to Gemini's `[0, 2]`, `stop` becomes `stopSequences`, and one
//! candidate is asked for. Tools (secret keys with the `tools` scope only): `tools` become one
//! tool of `functionDeclarations`, `tool_choice` becomes `toolConfig.functionCallingConfig`,
//! an assistant's calls `functionCall` parts and `tool` messages `functionResponse` parts of a
//! user turn (named after the call they answer); `response_format` becomes `responseMimeType`
//! and `responseSchema`. Schemas lose the JSON Schema keywords Gemini refuses.
//!
//! The answer: each SSE event is a whole `GenerateContentResponse`, turned into OpenAI chunks by
//! [`Translation`]: a first chunk with the role, one per event with text (parts marked
//! `thought` are the model's thinking and are not shown), one with `delta.tool_calls` per event
//! with `functionCall` parts (each call whole, with an id the adapter makes unless Gemini sent
//! one), a finish chunk at `finishReason` (`tool_calls` once functions were called).
//! `usageMetadata` is cumulative: each count the latest event reports wins, and an event without
//! it changes nothing. Thought tokens are output: `completion_tokens` is
//! `candidatesTokenCount + thoughtsTokenCount`, with the thoughts also in
//! `completion_tokens_details.reasoning_tokens`. A blocked prompt is a 200 whose event has
//! `promptFeedback.blockReason` and no candidates: the client sees an empty answer that ends with
//! `finish_reason: "content_filter"`. Gemini ends its stream by ending the body (there is no
//! `[DONE]`): the adapter then adds the usage chunk and `Done`, and a body that ends before any
//! finish reason is an answer cut short ([`UpstreamError::Dropped`]).
//!
//! Errors: an error status is [`UpstreamError::Status`], its body logged (scrubbed) and read for
//! one thing, Gemini's `RESOURCE_EXHAUSTED` (a quota, which the relay reports as a 429) and its
//! `retryDelay` when no `Retry-After` came. An `error` object inside a 200 stream is
//! [`UpstreamError::Reported`].

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use confab_protocol::{
    CHUNK_OBJECT, COMPLETION_OBJECT, ChatCompletionChunk, ChatRequest, ChunkChoice,
    CompletionTokensDetails, Delta, FunctionCallDelta, ResponseFormat, Role, Stop, ToolCallDelta,
    ToolChoice, ToolKind, Usage,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::common::{self, Translate, log_error_body, log_error_text, parse_retry_after};
use crate::http1;
use crate::{
    Call, EventStream, Provider, Secret, Settings, SettingsError, UpstreamError, UpstreamEvent,
};
use confab_protocol::sse::SseEvent;

/// Gemini's temperature range.
const MAX_TEMPERATURE: f32 = 2.0;

pub struct GeminiProvider {
    name: String,
    /// The API root's path, ending in `/`: `/v1beta/`.
    root_path: String,
    /// For `Debug` and logs: the root, without the key (which is never in it).
    root: url::Url,
    api_key: Option<Secret>,
    client: Arc<http1::Client>,
}

impl std::fmt::Debug for GeminiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeminiProvider")
            .field("name", &self.name)
            .field("root", &self.root.as_str())
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

impl GeminiProvider {
    pub fn new(settings: Settings<'_>) -> Result<Self, SettingsError> {
        let invalid = |problem: &str| SettingsError { field: "base_url", problem: problem.into() };
        let Some(root) = settings.base_url else {
            return Err(invalid("is required for kind `gemini`"));
        };
        if root.query().is_some() || root.fragment().is_some() {
            return Err(invalid(
                "takes no query or fragment for kind `gemini` (the key is sent in the \
                 `x-goog-api-key` header, from `api_key_env`)",
            ));
        }
        let last_segment = root.path().trim_end_matches('/').rsplit('/').next().unwrap_or("");
        if last_segment.is_empty() {
            return Err(invalid(
                "must name the API version for kind `gemini`, e.g. \
                 `https://generativelanguage.googleapis.com/v1beta`",
            ));
        }
        if last_segment == "models" || root.path().contains(':') {
            return Err(invalid(
                "is the API root for kind `gemini` (e.g. \
                 `https://generativelanguage.googleapis.com/v1beta`), not a model's endpoint",
            ));
        }
        if let Some(key) = &settings.api_key {
            common::check_header_safe(key)?;
        }
        let mut root_path = root.path().to_owned();
        if !root_path.ends_with('/') {
            root_path.push('/');
        }
        let client =
            http1::Client::new(root, settings.connect_timeout, common::IDLE_CONNECTION_TIMEOUT)
                .map_err(|problem| SettingsError { field: "base_url", problem })?;
        Ok(Self {
            name: settings.name.to_owned(),
            root_path,
            root: root.clone(),
            api_key: settings.api_key,
            client: Arc::new(client),
        })
    }

    /// The path (and query) of `method` for the request's model: the model name is one path
    /// segment, escaped, so that no name (`a/b`, `x?key=y`, `..`) can change the path.
    fn path(&self, request: &ChatRequest, method: &str) -> Result<String, UpstreamError> {
        let model = request.model.as_deref().filter(|model| !model.is_empty());
        let model = model.ok_or_else(|| UpstreamError::Protocol("no model to ask".into()))?;
        Ok(format!("{}models/{}:{method}", self.root_path, path_segment(model)))
    }
}

#[async_trait]
impl Provider for GeminiProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn open(
        &self,
        request: &ChatRequest,
        call: Call<'_>,
    ) -> Result<EventStream, UpstreamError> {
        let path = self.path(request, "streamGenerateContent?alt=sse")?;
        let body = self.send(&path, request, "text/event-stream", call).await?;
        let translation = Translation::new(request.model.clone().unwrap_or_default());
        let (upstream, secret) = (self.name.clone(), self.api_key.clone());
        let logged = Logged { translation, upstream, secret, buffer: VecDeque::new() };
        Ok(common::sse_stream(body, logged))
    }

    fn answers_whole(&self) -> bool {
        true
    }

    async fn complete(
        &self,
        request: &ChatRequest,
        call: Call<'_>,
    ) -> Result<Bytes, UpstreamError> {
        let path = self.path(request, "generateContent")?;
        let mut body = self.send(&path, request, "application/json", call).await?;
        let answer = common::read_answer(&mut body).await?;
        let mut translation = Translation::new(request.model.clone().unwrap_or_default());
        translation.completion(&answer).inspect_err(|error| {
            if *error == UpstreamError::Reported {
                log_error_text(&self.name, self.api_key.as_ref(), 200, &answer);
            }
        })
    }
}

impl GeminiProvider {
    /// Sends the request and returns the answer's body once its head says 2xx; any other
    /// answer is an error (its body is logged, scrubbed, and read for a quota error).
    async fn send(
        &self,
        path: &str,
        request: &ChatRequest,
        accept: &'static str,
        call: Call<'_>,
    ) -> Result<http1::Body, UpstreamError> {
        let body = serde_json::to_vec(&GenerateContentRequest::from(request))
            .map_err(|e| UpstreamError::Protocol(format!("cannot encode request: {e}")))?;
        let key_header =
            self.api_key.as_ref().map(|key| ("x-goog-api-key", key.expose().as_bytes()));
        let response =
            common::post_json(&self.client, path, &body, accept, key_header.as_slice(), call)
                .await?;
        if (200..300).contains(&response.status) {
            return Ok(response.body);
        }
        // Read before answering (unlike the OpenAI kind, which logs it in the background): a
        // quota error says so, and when to retry, only in its body.
        let status = response.status;
        let header_retry = response.retry_after.as_deref().and_then(parse_retry_after);
        let text = log_error_body(&self.name, self.api_key.as_ref(), status, response.body).await;
        let status = if text.contains("\"RESOURCE_EXHAUSTED\"") { 429 } else { status };
        let retry_after = header_retry.or_else(|| retry_delay(&text));
        Err(UpstreamError::Status { status, retry_after })
    }
}

/// Escapes a model name as one path segment: every byte but the unreserved ones
/// (`A-Z a-z 0-9 - . _ ~`) percent-encoded, `/`, `?`, `#`, `%` and `:` included.
fn path_segment(name: &str) -> String {
    let mut segment = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            segment.push(char::from(byte));
        } else {
            segment.push_str(&format!("%{byte:02X}"));
        }
    }
    segment
}

/// The seconds of the first `"retryDelay": "37s"` (Gemini's `RetryInfo`, in an error body's
/// `details`), rounded up; read from the text so that a body cut short still yields it.
fn retry_delay(text: &str) -> Option<u64> {
    let after = &text[text.find("\"retryDelay\"")? + "\"retryDelay\"".len()..];
    let value = after.trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    let seconds = &value[..value.find("s\"")?];
    let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, ""));
    let whole: u64 = whole.parse().ok()?;
    let fraction_set = fraction.bytes().any(|b| b != b'0');
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(whole + u64::from(fraction_set))
}

// ---- The request -------------------------------------------------------------------------

/// A `GenerateContentRequest`, as much of it as an OpenAI chat request can fill.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentRequest<'a> {
    contents: Vec<Content<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<Instruction<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<GeminiTools<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig<'a>>,
    generation_config: GenerationConfig<'a>,
}

#[derive(Debug, Serialize)]
struct Content<'a> {
    role: &'static str,
    parts: Vec<RequestPart<'a>>,
}

#[derive(Debug, Serialize)]
struct Instruction<'a> {
    parts: Vec<RequestPart<'a>>,
}

/// A part of a request's turn: text, a call the model made, or a call's result.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
enum RequestPart<'a> {
    FunctionCall {
        name: &'a str,
        args: Value,
    },
    FunctionResponse {
        name: &'a str,
        response: Value,
    },
    #[serde(untagged)]
    Text {
        text: &'a str,
    },
}

/// `tools[]`: Gemini groups function declarations in one tool.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct GeminiTools<'a> {
    function_declarations: Vec<FunctionDeclaration<'a>>,
}

#[derive(Debug, Serialize)]
struct FunctionDeclaration<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig<'a> {
    function_calling_config: FunctionCallingConfig<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingConfig<'a> {
    mode: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_function_names: Vec<&'a str>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig<'a> {
    candidate_count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_schema: Option<Value>,
}

/// A tool call as it is sent back, borrowed from the message's text.
#[derive(Deserialize)]
struct RawCall<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    function: RawFunction<'a>,
}

#[derive(Deserialize)]
struct RawFunction<'a> {
    #[serde(borrow)]
    name: &'a str,
    #[serde(default)]
    arguments: String,
}

impl<'a> From<&'a ChatRequest> for GenerateContentRequest<'a> {
    fn from(request: &'a ChatRequest) -> Self {
        let mut instructions = Vec::new();
        let mut contents: Vec<Content<'a>> = Vec::new();
        // Which function each call id named: a tool's result names the function, not the call.
        let mut called: Vec<(Cow<'a, str>, &'a str)> = Vec::new();
        for message in &request.messages {
            let mut parts = Vec::new();
            // Empty texts are left out: Gemini refuses a part with empty text.
            if !message.content.is_empty() && message.role != Role::Tool {
                parts.push(RequestPart::Text { text: &message.content });
            }
            let role = match message.role {
                Role::System | Role::Developer => {
                    instructions.extend(parts);
                    continue;
                }
                Role::User => "user",
                Role::Assistant => {
                    let calls: Vec<RawCall<'a>> = message
                        .tool_calls
                        .as_ref()
                        .and_then(|raw| serde_json::from_str(raw.get()).ok())
                        .unwrap_or_default();
                    for call in calls {
                        let args = arguments_object(&call.function.arguments);
                        parts.push(RequestPart::FunctionCall { name: call.function.name, args });
                        called.push((call.id, call.function.name));
                    }
                    "model"
                }
                // A result goes back in a user turn; its `response` must be an object, so the
                // tool's text is its `content`, as LiteLLM sends it.
                Role::Tool => {
                    let id = message.tool_call_id.as_deref().unwrap_or_default();
                    let name = called.iter().rev().find(|(call, _)| call == id).map(|c| c.1);
                    let response = json!({"content": message.content});
                    parts.push(RequestPart::FunctionResponse {
                        name: name.unwrap_or_default(),
                        response,
                    });
                    "user"
                }
            };
            if parts.is_empty() {
                continue;
            }
            match contents.last_mut() {
                Some(turn) if turn.role == role => turn.parts.extend(parts),
                _ => contents.push(Content { role, parts }),
            }
        }
        let stop_sequences = match &request.stop {
            Some(Stop::One(one)) => vec![one.as_str()],
            Some(Stop::Many(many)) => many.iter().map(String::as_str).collect(),
            None => Vec::new(),
        };
        let (response_mime_type, response_schema) = response_format(request);
        GenerateContentRequest {
            contents,
            system_instruction: (!instructions.is_empty())
                .then_some(Instruction { parts: instructions }),
            tools: function_declarations(request),
            tool_config: tool_config(request),
            generation_config: GenerationConfig {
                candidate_count: 1,
                max_output_tokens: request.max_completion_tokens.or(request.max_tokens),
                temperature: request.temperature.map(|t| t.clamp(0.0, MAX_TEMPERATURE)),
                top_p: request.top_p,
                stop_sequences: stop_sequences.into_iter().filter(|s| !s.is_empty()).collect(),
                response_mime_type,
                response_schema,
            },
        }
    }
}

/// OpenAI's arguments (JSON text) as Gemini's `args` (an object); `{}` for arguments that are
/// not one.
fn arguments_object(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(object @ Value::Object(_)) => object,
        _ => json!({}),
    }
}

/// A tool as sent, borrowed from the request's text.
#[derive(Deserialize)]
struct RawTool<'a> {
    #[serde(borrow)]
    function: RawDefinition<'a>,
}

#[derive(Deserialize)]
struct RawDefinition<'a> {
    #[serde(borrow)]
    name: &'a str,
    #[serde(borrow, default)]
    description: Option<&'a str>,
    #[serde(default)]
    parameters: Option<Value>,
}

/// The request's functions as one tool of `functionDeclarations`, their schemas cut down to
/// what Gemini reads.
fn function_declarations(request: &ChatRequest) -> Vec<GeminiTools<'_>> {
    let defined: Vec<RawTool<'_>> = request
        .tools
        .as_ref()
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .unwrap_or_default();
    if defined.is_empty() {
        return Vec::new();
    }
    let function_declarations = defined
        .into_iter()
        .map(|tool| FunctionDeclaration {
            name: tool.function.name,
            description: tool.function.description,
            parameters: tool.function.parameters.map(gemini_schema),
        })
        .collect();
    vec![GeminiTools { function_declarations }]
}

/// `tool_choice` as `toolConfig.functionCallingConfig`: `AUTO`, `NONE`, or `ANY` (limited to
/// the named function, for a named choice).
fn tool_config(request: &ChatRequest) -> Option<ToolConfig<'_>> {
    let choice = ToolChoice::parse(request.tool_choice.as_ref()?).ok()?;
    let (mode, allowed_function_names) = match &choice {
        ToolChoice::None => ("NONE", Vec::new()),
        ToolChoice::Auto => ("AUTO", Vec::new()),
        ToolChoice::Required => ("ANY", Vec::new()),
        ToolChoice::Function(_) => {
            // Borrowed from the request rather than from the parsed choice.
            #[derive(Deserialize)]
            struct Named<'a> {
                #[serde(borrow)]
                function: Name<'a>,
            }
            #[derive(Deserialize)]
            struct Name<'a> {
                #[serde(borrow)]
                name: &'a str,
            }
            let named: Named<'_> =
                serde_json::from_str(request.tool_choice.as_ref()?.get()).ok()?;
            ("ANY", vec![named.function.name])
        }
    };
    Some(ToolConfig {
        function_calling_config: FunctionCallingConfig { mode, allowed_function_names },
    })
}

/// `response_format` as `responseMimeType` (JSON) and `responseSchema`.
fn response_format(request: &ChatRequest) -> (Option<&'static str>, Option<Value>) {
    let format = request.response_format.as_ref().and_then(|raw| ResponseFormat::parse(raw).ok());
    match format {
        None | Some(ResponseFormat::Text) => (None, None),
        Some(ResponseFormat::JsonObject) => (Some("application/json"), None),
        Some(ResponseFormat::JsonSchema(format)) => {
            let schema = format.schema.and_then(|raw| raw.parse::<Value>().ok());
            (Some("application/json"), schema.map(gemini_schema))
        }
    }
}

/// A JSON Schema cut down to the OpenAPI subset Gemini accepts, as LiteLLM does: the keywords
/// it refuses (`$schema`, `$id`, `additionalProperties`, ...) are removed at every level, and a
/// `type` list with `"null"` becomes the type and `nullable`. Property names are left alone.
fn gemini_schema(mut schema: Value) -> Value {
    strip_schema(&mut schema);
    schema
}

/// Keywords of JSON Schema that Gemini's `Schema` refuses.
const UNSUPPORTED_KEYWORDS: [&str; 6] =
    ["$schema", "$id", "$comment", "additionalProperties", "strict", "unevaluatedProperties"];

fn strip_schema(schema: &mut Value) {
    let Value::Object(object) = schema else { return };
    for keyword in UNSUPPORTED_KEYWORDS {
        object.remove(keyword);
    }
    if let Some(Value::Array(types)) = object.get("type") {
        let nullable = types.iter().any(|t| t == "null");
        let rest: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        if let [only] = rest.as_slice() {
            object.insert("type".into(), only.clone());
            if nullable {
                object.insert("nullable".into(), Value::Bool(true));
            }
        }
    }
    for (keyword, value) in object.iter_mut() {
        match (keyword.as_str(), value) {
            // Maps from names to schemas: each schema is stripped, the names kept.
            ("properties" | "$defs" | "definitions", Value::Object(map)) => {
                map.values_mut().for_each(strip_schema);
            }
            ("items" | "not" | "additionalItems", value) => strip_schema(value),
            ("anyOf" | "oneOf" | "allOf" | "prefixItems", Value::Array(list)) => {
                list.iter_mut().for_each(strip_schema);
            }
            _ => {}
        }
    }
}

// ---- The answer --------------------------------------------------------------------------

/// A `GenerateContentResponse` (one SSE event, or a whole answer), as much of it as the
/// adapter reads; every field may be missing.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentResponse {
    #[serde(default)]
    candidates: Option<Vec<Candidate>>,
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    response_id: Option<String>,
    /// An error in place of the answer (a 200 that failed after all).
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<CandidateContent>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct CandidateContent {
    #[serde(default)]
    parts: Option<Vec<Part>>,
}

#[derive(Debug, Default, Deserialize)]
struct Part {
    #[serde(default)]
    text: Option<String>,
    /// Set on the model's thinking, which is not part of the answer.
    #[serde(default)]
    thought: Option<bool>,
    /// A call the model makes, whole (Gemini does not stream a call's arguments).
    #[serde(default, rename = "functionCall")]
    function_call: Option<GeminiCall>,
}

#[derive(Debug, Default, Deserialize)]
struct GeminiCall {
    /// Set by some Gemini APIs; OpenAI clients need one, so the adapter makes one otherwise.
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    args: Option<Box<RawValue>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: Option<u64>,
    #[serde(default)]
    candidates_token_count: Option<u64>,
    #[serde(default)]
    thoughts_token_count: Option<u64>,
}

impl UsageMetadata {
    /// Takes the counts `later` reports; those it leaves out keep their value (Vertex sends
    /// `usageMetadata` without counts on all but the last event).
    fn update(&mut self, later: UsageMetadata) {
        self.prompt_token_count = later.prompt_token_count.or(self.prompt_token_count);
        self.candidates_token_count = later.candidates_token_count.or(self.candidates_token_count);
        self.thoughts_token_count = later.thoughts_token_count.or(self.thoughts_token_count);
    }

    /// The OpenAI usage, thoughts counted as output; `None` while no count was reported (the
    /// relay then estimates).
    fn usage(&self) -> Option<Usage> {
        let Self { prompt_token_count, candidates_token_count, thoughts_token_count } = *self;
        // Nothing reported yet.
        prompt_token_count.or(candidates_token_count).or(thoughts_token_count)?;
        let thoughts = thoughts_token_count.unwrap_or(0);
        let completion = candidates_token_count.unwrap_or(0) + thoughts;
        let details = thoughts_token_count
            .map(|reasoning_tokens| CompletionTokensDetails { reasoning_tokens });
        Some(Usage {
            completion_tokens_details: details,
            ..Usage::new(prompt_token_count.unwrap_or(0), completion)
        })
    }
}

/// Gemini's finish reason as OpenAI's: a safety or policy stop is `content_filter`, a length
/// stop `length`, anything else (`STOP`, `OTHER`, a malformed call) `stop`.
fn finish_reason(gemini: &str) -> &'static str {
    match gemini {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" => "content_filter",
        _ => "stop",
    }
}

/// One Gemini answer being turned into OpenAI's shapes: what has been said so far and what it
/// has cost.
#[derive(Debug)]
struct Translation {
    model: String,
    /// `chatcmpl-` and Gemini's `responseId` (or a random one), the same on every chunk.
    id: Option<String>,
    created: u64,
    /// The first chunk (with the role) has been emitted.
    started: bool,
    /// The OpenAI finish reason, once Gemini gave one (or blocked the prompt).
    finish: Option<&'static str>,
    usage: UsageMetadata,
    /// The calls the model made so far (their OpenAI indexes).
    calls: u32,
    /// What the ids the adapter makes for calls start with: `call_` and a random part, so
    /// that calls of two answers in one conversation are told apart.
    call_prefix: String,
}

/// What one `GenerateContentResponse` added.
struct Step {
    text: String,
    /// The calls it made, as OpenAI tool calls with their index, id, name and arguments.
    calls: Vec<ToolCallDelta>,
    /// Set by the response that ended the answer.
    finish: Option<&'static str>,
}

impl Translation {
    fn new(model: String) -> Self {
        Self {
            model,
            id: None,
            created: crate::unix_now(),
            started: false,
            finish: None,
            usage: UsageMetadata::default(),
            calls: 0,
            call_prefix: format!("call_{:08x}", rand::random::<u32>()),
        }
    }

    /// Reads one response: its usage, its text (thoughts left out), its finish.
    fn absorb(&mut self, data: &[u8]) -> Result<Step, UpstreamError> {
        let response: GenerateContentResponse = serde_json::from_slice(data)
            .map_err(|e| UpstreamError::Protocol(format!("not a Gemini response: {e}")))?;
        if response.error.is_some() {
            return Err(UpstreamError::Reported);
        }
        if self.id.is_none() {
            self.id = Some(match &response.response_id {
                Some(id) => format!("chatcmpl-{id}"),
                None => format!("chatcmpl-gemini-{:x}{:08x}", self.created, rand::random::<u32>()),
            });
        }
        if let Some(usage) = response.usage_metadata {
            self.usage.update(usage);
        }
        let mut step = Step { text: String::new(), calls: Vec::new(), finish: None };
        let blocked = response.prompt_feedback.and_then(|feedback| feedback.block_reason);
        let candidate = response.candidates.and_then(|candidates| candidates.into_iter().next());
        if let Some(candidate) = candidate {
            let parts = candidate.content.and_then(|content| content.parts).unwrap_or_default();
            for part in parts.into_iter().filter(|part| part.thought != Some(true)) {
                step.text.push_str(part.text.as_deref().unwrap_or_default());
                if let Some(call) = part.function_call
                    && self.finish.is_none()
                {
                    step.calls.push(self.call(call));
                }
            }
            step.finish = candidate.finish_reason.as_deref().map(finish_reason);
            // An answer that called functions ends for the client to run them.
            if step.finish == Some("stop") && self.calls > 0 {
                step.finish = Some("tool_calls");
            }
        } else if blocked.is_some() {
            step.finish = Some("content_filter");
        }
        if self.finish.is_some() {
            // Nothing is added to an answer that has ended; its usage still counts.
            return Ok(Step { text: String::new(), calls: Vec::new(), finish: None });
        }
        self.finish = step.finish;
        Ok(step)
    }

    /// A call as an OpenAI tool call, whole: Gemini sends each call's arguments at once.
    fn call(&mut self, call: GeminiCall) -> ToolCallDelta {
        let index = self.calls;
        self.calls += 1;
        let arguments = call.args.map_or_else(|| "{}".to_owned(), |args| args.get().to_owned());
        ToolCallDelta {
            index,
            id: Some(call.id.unwrap_or_else(|| format!("{}_{index}", self.call_prefix))),
            kind: Some(ToolKind::Function),
            function: FunctionCallDelta { name: Some(call.name), arguments: Some(arguments) },
        }
    }

    /// The chunks one SSE event makes: the role first, then its text, its calls, its finish.
    fn event(
        &mut self,
        data: &str,
        out: &mut VecDeque<UpstreamEvent>,
    ) -> Result<(), UpstreamError> {
        let step = self.absorb(data.as_bytes())?;
        if !self.started {
            self.started = true;
            let role = Delta {
                role: Some(Role::Assistant),
                content: Some(String::new()),
                tool_calls: None,
            };
            out.push_back(self.chunk(vec![choice(role, None)], None));
        }
        if !step.text.is_empty() {
            let text = Delta { content: Some(step.text), ..Delta::default() };
            out.push_back(self.chunk(vec![choice(text, None)], None));
        }
        if !step.calls.is_empty() {
            let calls = Delta { tool_calls: Some(step.calls), ..Delta::default() };
            out.push_back(self.chunk(vec![choice(calls, None)], None));
        }
        if let Some(finish) = step.finish {
            out.push_back(self.chunk(vec![choice(Delta::default(), Some(finish))], None));
        }
        Ok(())
    }

    /// The end of the body: the usage chunk and `Done` after a finish; without one, the answer
    /// was cut short.
    fn end(&mut self, out: &mut VecDeque<UpstreamEvent>) -> Result<(), UpstreamError> {
        if self.finish.is_none() {
            return Err(UpstreamError::Dropped);
        }
        if let Some(usage) = self.usage.usage() {
            out.push_back(self.chunk(Vec::new(), Some(usage)));
        }
        out.push_back(UpstreamEvent::Done);
        Ok(())
    }

    fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> UpstreamEvent {
        let chunk = ChatCompletionChunk {
            id: self.id.clone().unwrap_or_default(),
            object: CHUNK_OBJECT.into(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        };
        UpstreamEvent::Data(serde_json::to_string(&chunk).unwrap_or_default())
    }

    /// A whole answer (`generateContent`'s body) as an OpenAI `chat.completion`; `usage` is
    /// left out when Gemini reported none (the relay then adds its estimate).
    fn completion(&mut self, body: &[u8]) -> Result<Bytes, UpstreamError> {
        let step = self.absorb(body)?;
        let finish = step.finish.ok_or_else(|| {
            UpstreamError::Protocol("a Gemini answer with neither a candidate nor a block".into())
        })?;
        let mut message = json!({"role": "assistant", "content": step.text});
        if !step.calls.is_empty() {
            let calls: Vec<Value> = step
                .calls
                .into_iter()
                .map(|call| {
                    json!({"id": call.id, "type": "function", "function": {
                        "name": call.function.name, "arguments": call.function.arguments}})
                })
                .collect();
            if step.text.is_empty() {
                message["content"] = Value::Null;
            }
            message["tool_calls"] = Value::Array(calls);
        }
        let mut completion = json!({
            "id": self.id,
            "object": COMPLETION_OBJECT,
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        });
        if let Some(usage) = self.usage.usage() {
            completion["usage"] = json!(usage);
        }
        serde_json::to_vec(&completion)
            .map(Bytes::from)
            .map_err(|e| UpstreamError::Protocol(format!("cannot encode the answer: {e}")))
    }
}

fn choice(delta: Delta, finish: Option<&str>) -> ChunkChoice {
    ChunkChoice { index: 0, delta, finish_reason: finish.map(Into::into) }
}

/// A Gemini stream's translation, with what it needs to log an error event. Gemini has no
/// terminal event: the end of the body ends the answer ([`Translation::end`]).
struct Logged {
    translation: Translation,
    /// For the log of an error event: `[[upstreams]] name` and the key to scrub.
    upstream: String,
    secret: Option<Secret>,
    /// The chunks of one event, before they are handed on (kept to reuse its room).
    buffer: VecDeque<UpstreamEvent>,
}

impl Logged {
    fn hand_on(
        &mut self,
        translated: Result<(), UpstreamError>,
        out: &mut VecDeque<Result<UpstreamEvent, UpstreamError>>,
    ) {
        out.extend(self.buffer.drain(..).map(Ok));
        if let Err(error) = translated {
            out.push_back(Err(error));
        }
    }
}

impl Translate for Logged {
    fn event(&mut self, event: SseEvent, out: &mut VecDeque<Result<UpstreamEvent, UpstreamError>>) {
        let translated = if event.is("error") {
            Err(UpstreamError::Reported)
        } else {
            self.translation.event(&event.data, &mut self.buffer)
        };
        if translated == Err(UpstreamError::Reported) {
            log_error_text(&self.upstream, self.secret.as_ref(), 200, event.data.as_bytes());
        }
        self.hand_on(translated, out);
    }

    fn end(&mut self, out: &mut VecDeque<Result<UpstreamEvent, UpstreamError>>) {
        let ended = self.translation.end(&mut self.buffer);
        self.hand_on(ended, out);
    }
}

#[cfg(test)]
mod tests {
    //! The event sequences below follow the shapes Gemini documents and sends: the Gemini API's
    //! `usageMetadata` with counts on every event (`thoughtsTokenCount` for thinking models),
    //! Vertex AI's with counts on the last event only, a last event whose only part is an empty
    //! text with a `thoughtSignature`, and a blocked prompt's `promptFeedback`.

    use std::time::Duration;

    use serde_json::{Value, json};

    use super::*;
    use confab_protocol::ChatMessage;

    /// What a client reads from a translated stream: each chunk as JSON, `[DONE]` as a string.
    fn translate(events: &[&str]) -> Result<Vec<Value>, UpstreamError> {
        let mut translation = Translation::new("gemini-2.5-flash".into());
        let mut out = VecDeque::new();
        for event in events {
            translation.event(event, &mut out)?;
        }
        translation.end(&mut out)?;
        Ok(out
            .into_iter()
            .map(|event| match event {
                UpstreamEvent::Data(data) => serde_json::from_str(&data).unwrap(),
                UpstreamEvent::Done => json!("[DONE]"),
            })
            .collect())
    }

    /// The text, finish reason and usage a client would take from the chunks.
    fn answer(chunks: &[Value]) -> (String, Option<String>, Option<Value>) {
        let mut text = String::new();
        let mut finish = None;
        let mut usage = None;
        for chunk in chunks.iter().filter(|chunk| chunk.is_object()) {
            assert_eq!(chunk["object"], "chat.completion.chunk");
            for choice in chunk["choices"].as_array().unwrap() {
                text.push_str(choice["delta"]["content"].as_str().unwrap_or_default());
                if let Some(reason) = choice["finish_reason"].as_str() {
                    assert!(finish.is_none(), "a second finish: {chunks:?}");
                    finish = Some(reason.to_owned());
                }
            }
            if !chunk["usage"].is_null() {
                assert_eq!(chunk["choices"], json!([]), "usage comes on its own chunk");
                usage = Some(chunk["usage"].clone());
            }
        }
        assert_eq!(chunks.last(), Some(&json!("[DONE]")), "{chunks:?}");
        (text, finish, usage)
    }

    const FLASH_FIRST: &str = r#"{"candidates": [{"content": {"parts": [{"text": "The capital"}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 9,"candidatesTokenCount": 2,"totalTokenCount": 11,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 9}]},"modelVersion": "gemini-2.0-flash","responseId": "mfN6aJ3CBfqxvdIPnK2K0Qc"}"#;
    const FLASH_LAST: &str = r#"{"candidates": [{"content": {"parts": [{"text": " of France is Paris."}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 9,"candidatesTokenCount": 7,"totalTokenCount": 16,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 9}],"candidatesTokensDetails": [{"modality": "TEXT","tokenCount": 7}]},"modelVersion": "gemini-2.0-flash","responseId": "mfN6aJ3CBfqxvdIPnK2K0Qc"}"#;

    #[test]
    fn a_stream_becomes_openai_chunks_with_the_role_first_and_usage_last() {
        let chunks = translate(&[FLASH_FIRST, FLASH_LAST]).unwrap();
        assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
        assert_eq!(chunks[0]["id"], "chatcmpl-mfN6aJ3CBfqxvdIPnK2K0Qc");
        assert_eq!(chunks[0]["model"], "gemini-2.5-flash");
        assert!(chunks.iter().filter(|c| c.is_object()).all(|c| c["id"] == chunks[0]["id"]));
        let (text, finish, usage) = answer(&chunks);
        assert_eq!(text, "The capital of France is Paris.");
        assert_eq!(finish.as_deref(), Some("stop"));
        assert_eq!(
            usage,
            Some(json!({"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}))
        );
        // role, two texts, finish, usage, [DONE]
        assert_eq!(chunks.len(), 6, "{chunks:?}");
    }

    #[test]
    fn every_finish_reason_maps_to_its_openai_equivalent() {
        for (gemini, openai) in [
            ("STOP", "stop"),
            ("MAX_TOKENS", "length"),
            ("SAFETY", "content_filter"),
            ("RECITATION", "content_filter"),
            ("BLOCKLIST", "content_filter"),
            ("PROHIBITED_CONTENT", "content_filter"),
            ("SPII", "content_filter"),
            ("OTHER", "stop"),
            ("LANGUAGE", "stop"),
            ("MALFORMED_FUNCTION_CALL", "stop"),
            ("FINISH_REASON_UNSPECIFIED", "stop"),
        ] {
            let last = format!(
                r#"{{"candidates": [{{"content": {{"parts": [{{"text": "."}}],"role": "model"}},"finishReason": "{gemini}","index": 0}}],"usageMetadata": {{"promptTokenCount": 4,"candidatesTokenCount": 3,"totalTokenCount": 7}}}}"#
            );
            let chunks = translate(&[FLASH_FIRST, &last]).unwrap();
            let (text, finish, usage) = answer(&chunks);
            assert_eq!(text, "The capital.", "{gemini}");
            assert_eq!(finish.as_deref(), Some(openai), "{gemini}");
            assert_eq!(usage.unwrap()["completion_tokens"], 3, "{gemini}");
        }
    }

    #[test]
    fn a_safety_stop_without_content_ends_the_answer_with_content_filter() {
        let stopped = r#"{"candidates": [{"finishReason": "SAFETY","index": 0,"safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT","probability": "HIGH","blocked": true}]}],"usageMetadata": {"promptTokenCount": 9,"candidatesTokenCount": 2,"totalTokenCount": 11}}"#;
        let (text, finish, _) = answer(&translate(&[FLASH_FIRST, stopped]).unwrap());
        assert_eq!(text, "The capital");
        assert_eq!(finish.as_deref(), Some("content_filter"));
    }

    #[test]
    fn a_blocked_prompt_is_an_empty_answer_ending_in_content_filter_with_its_usage() {
        let blocked = r#"{"promptFeedback": {"blockReason": "SAFETY","safetyRatings": [{"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT","probability": "NEGLIGIBLE"},{"category": "HARM_CATEGORY_DANGEROUS_CONTENT","probability": "HIGH"}]},"usageMetadata": {"promptTokenCount": 12,"totalTokenCount": 12},"modelVersion": "gemini-2.0-flash","responseId": "blocked-1"}"#;
        let chunks = translate(&[blocked]).unwrap();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let (text, finish, usage) = answer(&chunks);
        assert_eq!(text, "");
        assert_eq!(finish.as_deref(), Some("content_filter"));
        assert_eq!(
            usage,
            Some(json!({"prompt_tokens": 12, "completion_tokens": 0, "total_tokens": 12}))
        );
    }

    #[test]
    fn usage_is_cumulative_and_an_event_without_it_resets_nothing() {
        let middle = r#"{"candidates": [{"content": {"parts": [{"text": " of France"}],"role": "model"},"index": 0}],"modelVersion": "gemini-2.0-flash"}"#;
        let last = r#"{"candidates": [{"content": {"parts": [{"text": " is Paris."}],"role": "model"},"finishReason": "STOP","index": 0}],"modelVersion": "gemini-2.0-flash"}"#;
        let (text, _, usage) = answer(&translate(&[FLASH_FIRST, middle, last]).unwrap());
        assert_eq!(text, "The capital of France is Paris.");
        // The last counts reported (on the first event) stand.
        assert_eq!(
            usage,
            Some(json!({"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}))
        );

        let (_, _, usage) = answer(&translate(&[FLASH_FIRST, middle, FLASH_LAST]).unwrap());
        assert_eq!(usage.unwrap()["completion_tokens"], 7, "the last report wins");
    }

    #[test]
    fn vertex_usage_without_counts_until_the_last_event_is_read_from_the_last_event() {
        // Vertex AI: `usageMetadata` on every event, counts only on the last, whose only part is
        // an empty text carrying a thought signature.
        let events = [
            r#"{"candidates": [{"content": {"role": "model","parts": [{"text": "Hello!"}]}}],"usageMetadata": {"trafficType": "ON_DEMAND"},"modelVersion": "gemini-2.5-flash","createTime": "2026-03-10T14:54:45.066123Z","responseId": "tTCwacuEBMvnitYP06qsgQY"}"#,
            r#"{"candidates": [{"content": {"role": "model","parts": [{"text": " How can I help you today?"}]}}],"usageMetadata": {"trafficType": "ON_DEMAND"},"modelVersion": "gemini-2.5-flash","createTime": "2026-03-10T14:54:45.066123Z","responseId": "tTCwacuEBMvnitYP06qsgQY"}"#,
            r#"{"candidates": [{"content": {"role": "model","parts": [{"text": "","thoughtSignature": "AY89a18iOcFus5wr5bW5xN6zZ4aUiCyhgmg6HE2YjtYD"}]},"finishReason": "STOP"}],"usageMetadata": {"promptTokenCount": 1,"candidatesTokenCount": 9,"totalTokenCount": 10,"trafficType": "ON_DEMAND"},"modelVersion": "gemini-2.5-flash","createTime": "2026-03-10T14:54:45.066123Z","responseId": "tTCwacuEBMvnitYP06qsgQY"}"#,
        ];
        let chunks = translate(&events).unwrap();
        let (text, finish, usage) = answer(&chunks);
        assert_eq!(text, "Hello! How can I help you today?");
        assert_eq!(finish.as_deref(), Some("stop"));
        assert_eq!(
            usage,
            Some(json!({"prompt_tokens": 1, "completion_tokens": 9, "total_tokens": 10}))
        );
        // No chunk for the empty part: role, two texts, finish, usage, [DONE].
        assert_eq!(chunks.len(), 6, "{chunks:?}");
    }

    #[test]
    fn thought_tokens_are_billed_as_output_and_thoughts_are_not_shown() {
        // gemini-2.5-flash with `includeThoughts`: the thinking arrives as parts marked
        // `thought`, and `thoughtsTokenCount` grows with it.
        let events = [
            r#"{"candidates": [{"content": {"parts": [{"text": "**Adding numbers**\n\nThe user asks for 1+1.","thought": true}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 14,"totalTokenCount": 88,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 14}],"thoughtsTokenCount": 74},"modelVersion": "gemini-2.5-flash","responseId": "-fYmau3DCcjhvdIP77P7kAo"}"#,
            r#"{"candidates": [{"content": {"parts": [{"text": "1 + 1 = 2"}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 14,"candidatesTokenCount": 7,"totalTokenCount": 251,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 14}],"thoughtsTokenCount": 230},"modelVersion": "gemini-2.5-flash","responseId": "-fYmau3DCcjhvdIP77P7kAo"}"#,
            r#"{"candidates": [{"content": {"parts": [{"text": "."}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 14,"candidatesTokenCount": 8,"totalTokenCount": 252,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 14}],"thoughtsTokenCount": 230},"modelVersion": "gemini-2.5-flash","responseId": "-fYmau3DCcjhvdIP77P7kAo"}"#,
        ];
        let (text, finish, usage) = answer(&translate(&events).unwrap());
        assert_eq!(text, "1 + 1 = 2.");
        assert_eq!(finish.as_deref(), Some("stop"));
        assert_eq!(
            usage,
            Some(json!({
                "prompt_tokens": 14,
                "completion_tokens": 238,
                "total_tokens": 252,
                "completion_tokens_details": {"reasoning_tokens": 230},
            }))
        );
    }

    #[test]
    fn a_body_that_ends_before_any_finish_was_cut_short() {
        assert_eq!(translate(&[FLASH_FIRST]), Err(UpstreamError::Dropped));
        assert_eq!(translate(&[]), Err(UpstreamError::Dropped));
    }

    #[test]
    fn an_error_inside_the_stream_is_reported_and_garbage_is_unreadable() {
        let error = r#"{"error": {"code": 500,"message": "An internal error has occurred.","status": "INTERNAL"}}"#;
        assert_eq!(translate(&[FLASH_FIRST, error]), Err(UpstreamError::Reported));
        assert!(matches!(translate(&["<html>"]), Err(UpstreamError::Protocol(_))));
    }

    #[test]
    fn a_whole_answer_becomes_a_chat_completion_with_thoughts_billed_as_output() {
        let body = r#"{"candidates": [{"content": {"parts": [{"text": "Thinking it over.","thought": true},{"text": "Paris."}],"role": "model"},"finishReason": "MAX_TOKENS","index": 0}],"usageMetadata": {"promptTokenCount": 9,"candidatesTokenCount": 2,"totalTokenCount": 40,"thoughtsTokenCount": 29},"modelVersion": "gemini-2.5-flash","responseId": "whole-1"}"#;
        let mut translation = Translation::new("gemini-2.5-flash".into());
        let completion: Value =
            serde_json::from_slice(&translation.completion(body.as_bytes()).unwrap()).unwrap();
        assert_eq!(completion["id"], "chatcmpl-whole-1");
        assert_eq!(completion["object"], "chat.completion");
        assert_eq!(completion["model"], "gemini-2.5-flash");
        assert_eq!(
            completion["choices"],
            json!([{
                "index": 0,
                "message": {"role": "assistant", "content": "Paris."},
                "finish_reason": "length",
            }])
        );
        assert_eq!(
            completion["usage"],
            json!({
                "prompt_tokens": 9,
                "completion_tokens": 31,
                "total_tokens": 40,
                "completion_tokens_details": {"reasoning_tokens": 29},
            })
        );
    }

    #[test]
    fn a_whole_answer_to_a_blocked_prompt_is_empty_and_filtered() {
        let body = r#"{"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},"usageMetadata": {"promptTokenCount": 5,"totalTokenCount": 5}}"#;
        let mut translation = Translation::new("m".into());
        let completion: Value =
            serde_json::from_slice(&translation.completion(body.as_bytes()).unwrap()).unwrap();
        assert_eq!(completion["choices"][0]["message"]["content"], "");
        assert_eq!(completion["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(completion["usage"]["prompt_tokens"], 5);

        let mut translation = Translation::new("m".into());
        let error = br#"{"error": {"code": 503, "status": "UNAVAILABLE"}}"#;
        assert_eq!(translation.completion(error), Err(UpstreamError::Reported));
    }

    fn translated(body: Value) -> Value {
        let chat: ChatRequest = serde_json::from_value(body).unwrap();
        serde_json::to_value(GenerateContentRequest::from(&chat)).unwrap()
    }

    fn weather_tools() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
            "parameters": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                "additionalProperties": false,
                "properties": {"city": {"type": "string"}, "unit": {"type": ["string", "null"]},
                    "additionalProperties": {"type": "boolean"}},
                "required": ["city"]}}}])
    }

    #[test]
    fn tools_become_function_declarations_with_schemas_gemini_accepts() {
        let request = translated(json!({"messages": [{"role": "user", "content": "Hi"}],
            "tools": weather_tools(), "tool_choice": "required"}));
        assert_eq!(
            request["tools"],
            json!([{"functionDeclarations": [{"name": "get_weather", "description": "Weather now",
                "parameters": {"type": "object",
                    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "nullable": true},
                        "additionalProperties": {"type": "boolean"}},
                    "required": ["city"]}}]}])
        );
        assert_eq!(request["toolConfig"], json!({"functionCallingConfig": {"mode": "ANY"}}));
        for (choice, expected) in [
            (json!("auto"), json!({"mode": "AUTO"})),
            (json!("none"), json!({"mode": "NONE"})),
            (
                json!({"type": "function", "function": {"name": "get_weather"}}),
                json!({"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
            ),
        ] {
            let request = translated(json!({"messages": [{"role": "user", "content": "Hi"}],
                "tools": weather_tools(), "tool_choice": choice}));
            assert_eq!(request["toolConfig"]["functionCallingConfig"], expected);
        }
    }

    #[test]
    fn calls_and_results_become_function_call_and_function_response_parts() {
        let request = translated(json!({
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": "Let me look.", "tool_calls": [
                    {"id": "call_a_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_a_0", "content": "22 C"},
                {"role": "user", "content": "And tomorrow?"},
            ],
            "tools": weather_tools(),
        }));
        assert_eq!(
            request["contents"],
            json!([
                {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
                {"role": "model", "parts": [{"text": "Let me look."},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"content": "22 C"}}},
                    {"text": "And tomorrow?"}]},
            ])
        );
    }

    #[test]
    fn a_response_format_sets_the_mime_type_and_schema() {
        let object = translated(json!({"messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_object"}}));
        assert_eq!(object["generationConfig"]["responseMimeType"], "application/json");
        assert_eq!(object["generationConfig"].get("responseSchema"), None);
        let schema = translated(json!({"messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "city", "strict": true,
                "schema": {"type": "object", "additionalProperties": false,
                    "properties": {"name": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string", "$comment": "x"}}}}}}}));
        assert_eq!(schema["generationConfig"]["responseMimeType"], "application/json");
        assert_eq!(
            schema["generationConfig"]["responseSchema"],
            json!({"type": "object", "properties": {"name": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}}})
        );
    }

    const CALL: &str = r#"{"candidates": [{"content": {"parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}, {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}], "role": "model"}, "finishReason": "STOP", "index": 0}], "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 12, "totalTokenCount": 42}, "responseId": "r1"}"#;

    #[test]
    fn streamed_function_calls_become_tool_call_chunks_ending_in_tool_calls() {
        let chunks = translate(&[CALL]).unwrap();
        let calls = &chunks[1]["choices"][0]["delta"]["tool_calls"];
        let id = calls[0]["id"].as_str().unwrap();
        assert!(id.starts_with("call_") && id.ends_with("_0"), "{id}");
        assert_eq!(
            calls,
            &json!([
                {"index": 0, "id": id, "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
                {"index": 1, "id": format!("{}_1", id.strip_suffix("_0").unwrap()), "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}},
            ])
        );
        let (text, finish, usage) = answer(&chunks);
        assert_eq!((text.as_str(), finish.as_deref()), ("", Some("tool_calls")));
        assert_eq!(usage.unwrap()["completion_tokens"], 12);
    }

    #[test]
    fn a_whole_answer_with_function_calls_has_tool_calls_and_null_content() {
        let mut translation = Translation::new("m".into());
        let answer: Value =
            serde_json::from_slice(&translation.completion(CALL.as_bytes()).unwrap()).unwrap();
        let choice = &answer["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        assert_eq!(
            choice["message"]["tool_calls"][1]["function"],
            json!({"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"})
        );
        assert_eq!(choice["message"]["tool_calls"][1]["type"], "function");
    }

    fn request(messages: Vec<ChatMessage>) -> ChatRequest {
        ChatRequest { model: Some("gemini-2.5-flash".into()), messages, ..ChatRequest::default() }
    }

    #[test]
    fn system_messages_become_the_system_instruction_and_roles_alternate() {
        let mut chat = request(vec![
            ChatMessage::new(Role::System, "You are the shop's assistant."),
            ChatMessage::new(Role::Developer, "Answer briefly."),
            ChatMessage::new(Role::User, "Hi"),
            ChatMessage::new(Role::User, "Do you ship to Norway?"),
            ChatMessage::new(Role::Assistant, ""),
            ChatMessage::new(Role::Assistant, "Yes."),
            ChatMessage::new(Role::User, "How long?"),
        ]);
        chat.max_tokens = Some(200);
        chat.temperature = Some(0.7);
        chat.top_p = Some(0.9);
        chat.stop = Some(Stop::Many(vec!["END".into(), String::new()]));
        let body = serde_json::to_value(GenerateContentRequest::from(&chat)).unwrap();
        assert_eq!(
            body,
            json!({
                "contents": [
                    {"role": "user", "parts": [{"text": "Hi"}, {"text": "Do you ship to Norway?"}]},
                    {"role": "model", "parts": [{"text": "Yes."}]},
                    {"role": "user", "parts": [{"text": "How long?"}]},
                ],
                "systemInstruction": {
                    "parts": [{"text": "You are the shop's assistant."}, {"text": "Answer briefly."}],
                },
                "generationConfig": {
                    "candidateCount": 1,
                    "maxOutputTokens": 200,
                    "temperature": 0.699999988079071,
                    "topP": 0.8999999761581421,
                    "stopSequences": ["END"],
                },
            })
        );
    }

    #[test]
    fn generation_config_clamps_temperature_and_takes_either_token_limit() {
        let mut chat = request(vec![ChatMessage::new(Role::User, "Hi")]);
        chat.temperature = Some(3.5);
        chat.max_completion_tokens = Some(64);
        chat.stop = Some(Stop::One("\n\n".into()));
        let body = serde_json::to_value(GenerateContentRequest::from(&chat)).unwrap();
        assert_eq!(
            body["generationConfig"],
            json!({
                "candidateCount": 1,
                "maxOutputTokens": 64,
                "temperature": 2.0,
                "stopSequences": ["\n\n"],
            })
        );
        assert!(body.get("systemInstruction").is_none());

        chat.temperature = Some(-1.0);
        let body = serde_json::to_value(GenerateContentRequest::from(&chat)).unwrap();
        assert_eq!(body["generationConfig"]["temperature"], 0.0);
    }

    fn provider(base_url: &str) -> Result<GeminiProvider, SettingsError> {
        let url = url::Url::parse(base_url).unwrap();
        GeminiProvider::new(Settings {
            name: "gemini",
            base_url: Some(&url),
            api_key: Some(Secret::new("AIza-test")),
            connect_timeout: Duration::from_secs(1),
            demo_token_delay: Duration::ZERO,
        })
    }

    #[test]
    fn the_model_name_is_one_escaped_path_segment() {
        let gemini = provider("https://generativelanguage.googleapis.com/v1beta").unwrap();
        let path = |model: &str| {
            let chat = ChatRequest { model: Some(model.into()), ..ChatRequest::default() };
            gemini.path(&chat, "generateContent").unwrap()
        };
        assert_eq!(path("gemini-2.5-flash"), "/v1beta/models/gemini-2.5-flash:generateContent");
        assert_eq!(
            path("../../x/y?key=k#f"),
            "/v1beta/models/..%2F..%2Fx%2Fy%3Fkey%3Dk%23f:generateContent"
        );
        assert_eq!(path("a:b%20c d"), "/v1beta/models/a%3Ab%2520c%20d:generateContent");
        assert_eq!(path("é"), "/v1beta/models/%C3%A9:generateContent");
        let nameless = ChatRequest::default();
        assert!(matches!(gemini.path(&nameless, "x"), Err(UpstreamError::Protocol(_))));
    }

    #[test]
    fn base_url_is_the_api_root_with_its_version() {
        let gateway = provider("https://gateway.example/v1/acct/gw/google-ai-studio/v1beta/");
        assert_eq!(gateway.unwrap().root_path, "/v1/acct/gw/google-ai-studio/v1beta/");
        for (url, problem) in [
            ("https://generativelanguage.googleapis.com", "must name the API version"),
            ("https://generativelanguage.googleapis.com/", "must name the API version"),
            ("https://generativelanguage.googleapis.com/v1beta?key=AIza", "takes no query"),
            ("https://generativelanguage.googleapis.com/v1beta#x", "takes no query"),
            ("https://generativelanguage.googleapis.com/v1beta/models", "not a model's endpoint"),
            (
                "https://generativelanguage.googleapis.com/v1beta/models/m:generateContent",
                "not a model's endpoint",
            ),
            ("ftp://generativelanguage.googleapis.com/v1beta", "unsupported scheme"),
        ] {
            let error = provider(url).unwrap_err();
            assert_eq!(error.field, "base_url", "{url}");
            assert!(error.problem.contains(problem), "{url}: {}", error.problem);
        }
    }

    #[test]
    fn the_retry_delay_of_a_quota_error_is_read_from_its_body() {
        let body = r#"{"error": {"code": 429, "message": "You exceeded your current quota.", "status": "RESOURCE_EXHAUSTED", "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure"}, {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]}}"#;
        assert_eq!(retry_delay(body), Some(37));
        assert_eq!(retry_delay(r#"{"retryDelay":"1.5s"}"#), Some(2));
        assert_eq!(retry_delay(r#"{"retryDelay": "2.000s"}"#), Some(2));
        assert_eq!(retry_delay(r#"{"retryDelay": "soon"}"#), None);
        assert_eq!(retry_delay(r#"{"error": {"code": 500}}"#), None);
    }
}
