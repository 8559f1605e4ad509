//! Anthropic's Messages API (`kind = "anthropic"`): the relay's OpenAI-shaped request becomes a
//! `POST {base_url}/v1/messages`, and Anthropic's answer becomes OpenAI chunks (or one OpenAI
//! `chat.completion`), so the relay, the meter and the widget never know who answered.
//!
//! `base_url` is the API's root without `/v1` (`https://api.anthropic.com`), as Anthropic's own
//! SDKs take it; the adapter adds `/v1/messages`.
//!
//! The request: system and developer messages are joined into the top-level `system`;
//! consecutive messages of one role are merged (the API wants user and assistant turns to
//! alternate), and a conversation that opens with the assistant (a widget's greeting) gets a
//! minimal user turn (`.`) before it, since the first message must be the user's; `max_tokens` is always sent (the request's, else [`DEFAULT_MAX_TOKENS`]);
//! `temperature` is clamped into Anthropic's `[0, 1]` (OpenAI's range is `[0, 2]`); `top_p`
//! is passed; `stop` becomes `stop_sequences`; `user` becomes `metadata.user_id`. Penalties have
//! no Anthropic equivalent and are dropped. Tools (secret keys with the `tools` scope only):
//! `tools` become Anthropic's (`input_schema`), `tool_choice` `auto`/`none`/`required`/a function
//! becomes `auto`/`none`/`any`/`tool` (with `disable_parallel_tool_use` for
//! `parallel_tool_calls: false`), an assistant's `tool_calls` become `tool_use` blocks and `tool`
//! messages `tool_result` blocks of a user turn (consecutive results in one). A
//! `response_format` asking for JSON becomes a tool, [`JSON_TOOL_NAME`], with the format's
//! schema, which the model is made to call (LiteLLM's approach: the API has no JSON mode); its
//! input is the answer's text.
//!
//! The stream ([`StreamTranslator`]) is read by the JSON `type` of each event rather than by
//! its `event:` name: `message_start` gives the message id and the input token counts (cache
//! writes and reads included) and becomes the first chunk (`role: assistant`);
//! `content_block_delta` with a `text_delta` becomes a content chunk; a `tool_use` block becomes
//! OpenAI's `delta.tool_calls`, a first entry with its id and name at `content_block_start`,
//! then its `input_json_delta` fragments as `arguments` (the format tool's fragments are content
//! instead); every other block (thinking) is skipped;
//! `message_delta` gives the stop reason and usage, whose counts are cumulative (the last one
//! wins, an absent count keeps the one before); `message_stop` becomes the finish chunk, the
//! usage chunk (`choices: []`) and the end; `ping` and event types Anthropic adds later are
//! ignored, as its docs ask; an `error` event after the 200 ends the stream, its text logged
//! (scrubbed), never forwarded: as the status Anthropic would have answered with for the errors
//! that have one (`overloaded_error` 529, `api_error` 500, `rate_limit_error` 429), so that
//! before the first event they fall back like that status, and as [`UpstreamError::Reported`]
//! otherwise.
//!
//! Usage is reported in the OpenAI shape: `prompt_tokens` counts every input token (uncached,
//! written to the cache, read from it), `prompt_tokens_details.cached_tokens` the cache reads
//! and Confab's `prompt_tokens_details.cache_creation_tokens` the cache writes, which the meter
//! prices apart when the price table says so.

use std::borrow::Cow;
use std::collections::VecDeque;

use async_trait::async_trait;
use bytes::Bytes;
use confab_protocol::sse::SseEvent;
use confab_protocol::{
    CHUNK_OBJECT, COMPLETION_OBJECT, ChatCompletion, ChatCompletionChunk, ChatMessage, ChatRequest,
    ChunkChoice, CompletionChoice, Delta, FunctionCall, FunctionCallDelta, PromptTokensDetails,
    RawJson, ResponseFormat, Role, Stop, ToolCall, ToolCallDelta, ToolChoice, ToolKind, Usage,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::common::{self, Endpoint, Translate, log_error_text};
use crate::{
    Call, EventStream, Provider, Secret, Settings, SettingsError, UpstreamError, UpstreamEvent,
    unix_now,
};

/// The API version every call names (`anthropic-version`).
const API_VERSION: &str = "2023-06-01";

/// `max_tokens` when the request sets none: the Messages API requires one. The relay's policy
/// sets one on every request it forwards, so this only serves callers of the crate that do not.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// The highest `temperature` Anthropic accepts.
const MAX_TEMPERATURE: f32 = 1.0;

pub struct AnthropicProvider {
    /// `{base_url}/v1/messages`, with the key the `x-api-key` header carries.
    endpoint: Endpoint,
}

impl std::fmt::Debug for AnthropicProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnthropicProvider")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl AnthropicProvider {
    pub fn new(settings: Settings<'_>) -> Result<Self, SettingsError> {
        if let Some(base) = settings.base_url
            && base.path().trim_end_matches('/').ends_with("/v1")
        {
            return Err(SettingsError {
                field: "base_url",
                problem: format!(
                    "for kind `anthropic` is the API's root without `/v1` (e.g. \
                     `https://api.anthropic.com`, not `{base}`): the relay adds `/v1/messages`"
                ),
            });
        }
        let endpoint = Endpoint::new(&settings, "anthropic", "v1/messages")?;
        Ok(Self { endpoint })
    }

    /// Sends the translated request and returns the answer's body once its head says 2xx.
    async fn send(
        &self,
        request: &ChatRequest,
        stream: bool,
        call: Call<'_>,
    ) -> Result<crate::http1::Body, UpstreamError> {
        let body = serde_json::to_vec(&MessagesRequest::from_chat(request, stream))
            .map_err(|e| UpstreamError::Protocol(format!("cannot encode request: {e}")))?;
        let accept = if stream { "text/event-stream" } else { "application/json" };
        let mut headers: Vec<(&str, &[u8])> = vec![("anthropic-version", API_VERSION.as_bytes())];
        if let Some(key) = self.endpoint.api_key() {
            headers.push(("x-api-key", key.expose().as_bytes()));
        }
        self.endpoint.post(&body, accept, &headers, call).await
    }
}

#[async_trait]
impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        self.endpoint.name()
    }

    async fn open(
        &self,
        request: &ChatRequest,
        call: Call<'_>,
    ) -> Result<EventStream, UpstreamError> {
        let body = self.send(request, true, call).await?;
        let model = request.model.clone().unwrap_or_default();
        let mut translator = StreamTranslator::new(model);
        translator.json_mode = json_format(request).is_some();
        let upstream = self.endpoint.name().to_owned();
        let secret = self.endpoint.api_key().cloned();
        Ok(common::sse_stream(body, Logged { translator, upstream, secret }))
    }

    fn answers_whole(&self) -> bool {
        true
    }

    async fn complete(
        &self,
        request: &ChatRequest,
        call: Call<'_>,
    ) -> Result<Bytes, UpstreamError> {
        let mut body = self.send(request, false, call).await?;
        let body = common::read_answer(&mut body).await?;
        let model = request.model.as_deref().unwrap_or_default();
        completion_from_message(&body, model, json_format(request).is_some()).inspect_err(|error| {
            if matches!(error, UpstreamError::Reported | UpstreamError::Status { .. }) {
                log_error_text(self.endpoint.name(), self.endpoint.api_key(), 200, &body);
            }
        })
    }
}

/// A [`StreamTranslator`] whose reported errors are logged (scrubbed) before they end the
/// stream.
struct Logged {
    translator: StreamTranslator,
    /// For the log: `[[upstreams]] name` and the key to scrub.
    upstream: String,
    secret: Option<Secret>,
}

impl Translate for Logged {
    fn event(&mut self, event: SseEvent, out: &mut VecDeque<Result<UpstreamEvent, UpstreamError>>) {
        if let Err(error) = self.translator.event(&event, out)
            && matches!(error, UpstreamError::Reported | UpstreamError::Status { .. })
        {
            log_error_text(&self.upstream, self.secret.as_ref(), 200, event.data.as_bytes());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The request.

/// A Messages API request body.
#[derive(Debug, Serialize)]
struct MessagesRequest<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<Message<'a>>,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<AnthropicTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<AnthropicToolChoice<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[derive(Debug, Serialize)]
struct Message<'a> {
    role: &'static str,
    content: MessageContent<'a>,
}

/// A message's content: plain text, or blocks once it holds tool calls or their results.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum MessageContent<'a> {
    Text(Cow<'a, str>),
    Blocks(Vec<Block<'a>>),
}

impl<'a> MessageContent<'a> {
    /// Adds `more` after what is there: text to text joined by a blank line, anything else as
    /// blocks.
    fn append(&mut self, more: MessageContent<'a>) {
        match (&mut *self, more) {
            (MessageContent::Text(text), MessageContent::Text(more)) => join(text.to_mut(), &more),
            (MessageContent::Blocks(blocks), more) => blocks.extend(more.into_blocks()),
            (MessageContent::Text(_), more) => {
                let text = std::mem::replace(self, MessageContent::Blocks(Vec::new()));
                let mut blocks = text.into_blocks();
                blocks.extend(more.into_blocks());
                *self = MessageContent::Blocks(blocks);
            }
        }
    }

    fn into_blocks(self) -> Vec<Block<'a>> {
        match self {
            MessageContent::Text(text) => vec![Block::Text { text }],
            MessageContent::Blocks(blocks) => blocks,
        }
    }
}

/// A content block of a request's message.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: Cow<'a, str>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Object<'a>,
    },
    ToolResult {
        tool_use_id: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        content: &'a str,
    },
}

/// A JSON object sent on: as the client wrote it, or one of two of the adapter's own.
#[derive(Debug)]
enum Object<'a> {
    Given(Cow<'a, RawValue>),
    /// `{"type":"object"}`: the schema of any object.
    AnySchema,
    /// `{}`.
    Empty,
}

impl Serialize for Object<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Object::Given(raw) => raw.serialize(serializer),
            Object::AnySchema => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("type", "object")?;
                map.end()
            }
            Object::Empty => serializer.serialize_map(Some(0))?.end(),
        }
    }
}

#[derive(Debug, Serialize)]
struct AnthropicTool<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: Object<'a>,
}

#[derive(Debug, Serialize, PartialEq)]
struct AnthropicToolChoice<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    disable_parallel_tool_use: bool,
}

#[derive(Debug, Serialize)]
struct Metadata<'a> {
    user_id: &'a str,
}

/// The tool a `response_format` becomes: Anthropic's Messages API has no JSON mode, so, as
/// LiteLLM does, the model is made to call a tool whose input schema is the format's, and the
/// call's input comes back to the client as the answer's text.
pub(crate) const JSON_TOOL_NAME: &str = "json_tool_call";

impl<'a> MessagesRequest<'a> {
    fn from_chat(request: &'a ChatRequest, stream: bool) -> Self {
        let mut system: Option<String> = None;
        let mut messages: Vec<Message<'a>> = Vec::with_capacity(request.messages.len());
        for message in &request.messages {
            let (role, content) = match message.role {
                Role::System | Role::Developer => {
                    if !message.content.trim().is_empty() {
                        join(system.get_or_insert_with(String::new), &message.content);
                    }
                    continue;
                }
                Role::User => ("user", text_content(message)),
                Role::Assistant => ("assistant", assistant_content(message)),
                // A tool's result goes back in a user turn, as a block answering the call.
                Role::Tool => (
                    "user",
                    Some(MessageContent::Blocks(vec![Block::ToolResult {
                        tool_use_id: message.tool_call_id.as_deref().unwrap_or_default(),
                        content: &message.content,
                    }])),
                ),
            };
            // Anthropic refuses empty text: a blank message adds nothing to the conversation.
            let Some(content) = content else { continue };
            match messages.last_mut() {
                Some(last) if last.role == role => last.content.append(content),
                _ => messages.push(Message { role, content }),
            }
        }
        // The first message must be the user's: a conversation that opens with the assistant
        // (a widget's greeting) gets a minimal user turn before it, as LiteLLM does, which keeps
        // what the assistant said.
        if messages.first().is_some_and(|first| first.role == "assistant") {
            let opening = Message { role: "user", content: MessageContent::Text(".".into()) };
            messages.insert(0, opening);
        }
        let max_tokens = match (request.max_tokens, request.max_completion_tokens) {
            (Some(a), Some(b)) => a.min(b),
            (one, other) => one.or(other).unwrap_or(DEFAULT_MAX_TOKENS),
        };
        let stop_sequences = match &request.stop {
            None => Vec::new(),
            Some(Stop::One(one)) => vec![one.as_str()],
            Some(Stop::Many(many)) => many.iter().map(String::as_str).collect(),
        };
        let (tools, tool_choice) = tools(request);
        Self {
            model: request.model.as_deref().unwrap_or_default(),
            system,
            messages,
            max_tokens,
            temperature: request.temperature.map(|t| t.clamp(0.0, MAX_TEMPERATURE)),
            top_p: request.top_p,
            stop_sequences,
            metadata: request.user.as_deref().map(|user_id| Metadata { user_id }),
            tools,
            tool_choice,
            stream,
        }
    }
}

/// A user message's text, `None` when blank.
fn text_content(message: &ChatMessage) -> Option<MessageContent<'_>> {
    (!message.content.trim().is_empty())
        .then(|| MessageContent::Text(message.content.as_str().into()))
}

/// An assistant message: its text, then a `tool_use` block per call (the arguments, OpenAI's
/// JSON text, as the block's `input` object; arguments that are not an object become `{}`).
fn assistant_content(message: &ChatMessage) -> Option<MessageContent<'_>> {
    // The relay's policy checked the calls' shape; calls of another shape are left out.
    let calls: Vec<RawCall<'_>> = message
        .tool_calls
        .as_ref()
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .unwrap_or_default();
    if calls.is_empty() {
        return text_content(message);
    }
    let mut blocks = Vec::with_capacity(calls.len() + 1);
    if !message.content.trim().is_empty() {
        blocks.push(Block::Text { text: message.content.as_str().into() });
    }
    for call in calls {
        let input = object_input(&call.function.arguments);
        blocks.push(Block::ToolUse { id: call.id, name: call.function.name, input });
    }
    Some(MessageContent::Blocks(blocks))
}

/// A tool call as it is sent back, borrowed from the message's text.
#[derive(Deserialize)]
struct RawCall<'a> {
    #[serde(borrow)]
    id: &'a str,
    #[serde(borrow)]
    function: RawFunction<'a>,
}

#[derive(Deserialize)]
struct RawFunction<'a> {
    #[serde(borrow)]
    name: &'a str,
    #[serde(default)]
    arguments: Cow<'a, str>,
}

/// OpenAI's arguments (JSON text) as Anthropic's `input` (a JSON object); `{}` for arguments
/// that are not one.
fn object_input(arguments: &str) -> Object<'static> {
    let arguments = arguments.trim();
    match serde_json::from_str::<Box<RawValue>>(arguments) {
        Ok(input) if arguments.starts_with('{') => Object::Given(Cow::Owned(input)),
        _ => Object::Empty,
    }
}

/// The request's tools and tool choice in Anthropic's shapes, with `response_format` as the
/// forced [`JSON_TOOL_NAME`] tool.
fn tools(request: &ChatRequest) -> (Vec<AnthropicTool<'_>>, Option<AnthropicToolChoice<'_>>) {
    let defined: Vec<RawTool<'_>> = request
        .tools
        .as_ref()
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .unwrap_or_default();
    let mut tools: Vec<AnthropicTool<'_>> = defined
        .into_iter()
        .map(|tool| AnthropicTool {
            name: tool.function.name,
            description: tool.function.description,
            input_schema: tool
                .function
                .parameters
                .map_or(Object::AnySchema, |schema| Object::Given(Cow::Borrowed(schema))),
        })
        .collect();
    let no_parallel = request.parallel_tool_calls == Some(false);
    let choice = |kind, name| AnthropicToolChoice {
        kind,
        name,
        disable_parallel_tool_use: no_parallel && kind != "none",
    };
    let mut tool_choice = match request.tool_choice.as_ref().map(ToolChoice::parse) {
        Some(Ok(ToolChoice::None)) => Some(choice("none", None)),
        Some(Ok(ToolChoice::Auto)) => Some(choice("auto", None)),
        Some(Ok(ToolChoice::Required)) => Some(choice("any", None)),
        Some(Ok(ToolChoice::Function(name))) => {
            let name = tools.iter().find(|t| t.name == name).map(|t| t.name);
            name.map(|name| choice("tool", Some(name)))
        }
        Some(Err(_)) | None if no_parallel && !tools.is_empty() => Some(choice("auto", None)),
        Some(Err(_)) | None => None,
    };
    if let Some((description, schema)) = json_format(request) {
        let forced = tools.is_empty();
        tools.push(AnthropicTool { name: JSON_TOOL_NAME, description, input_schema: schema });
        // Alone, the format's tool is forced; beside the client's tools, the model must call one
        // of them or answer in the format, unless the client chose otherwise.
        match &tool_choice {
            _ if forced => tool_choice = Some(choice("tool", Some(JSON_TOOL_NAME))),
            None => tool_choice = Some(choice("any", None)),
            Some(AnthropicToolChoice { kind: "auto", .. }) => {
                tool_choice = Some(choice("any", None))
            }
            Some(_) => {}
        }
    }
    (tools, tool_choice)
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
    #[serde(borrow, default)]
    parameters: Option<&'a RawValue>,
}

/// A `response_format` that asks for JSON: the format tool's description and input schema.
fn json_format(request: &ChatRequest) -> Option<(Option<&str>, Object<'_>)> {
    match ResponseFormat::parse(request.response_format.as_ref()?).ok()? {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some((None, Object::AnySchema)),
        ResponseFormat::JsonSchema(_) => {
            #[derive(Deserialize)]
            struct Format<'a> {
                #[serde(borrow)]
                json_schema: Schema<'a>,
            }
            #[derive(Deserialize)]
            struct Schema<'a> {
                #[serde(borrow, default)]
                description: Option<&'a str>,
                #[serde(borrow, default)]
                schema: Option<&'a RawValue>,
            }
            let format: Format<'_> =
                serde_json::from_str(request.response_format.as_ref()?.get()).ok()?;
            let schema = format
                .json_schema
                .schema
                .map_or(Object::AnySchema, |schema| Object::Given(Cow::Borrowed(schema)));
            Some((format.json_schema.description, schema))
        }
    }
}

/// Appends `more` to `text`, a blank line between them.
fn join(text: &mut String, more: &str) {
    if !text.is_empty() {
        text.push_str("\n\n");
    }
    text.push_str(more);
}

// ---------------------------------------------------------------------------------------------
// The answer.

/// Token counts as Anthropic reports them. Every field may be absent (or `null`): in a
/// `message_delta` an absent count keeps the one reported before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
struct AnthropicUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// The counts of `later` where it has them: Anthropic's counts are cumulative.
    fn update(&mut self, later: AnthropicUsage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.cache_creation_input_tokens =
            later.cache_creation_input_tokens.or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens =
            later.cache_read_input_tokens.or(self.cache_read_input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
    }

    /// The OpenAI shape: every input token in `prompt_tokens`, the cache's share in the details.
    fn to_openai(self) -> Usage {
        let written = self.cache_creation_input_tokens.unwrap_or(0);
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let prompt = self.input_tokens.unwrap_or(0).saturating_add(written).saturating_add(read);
        let mut usage = Usage::new(prompt, self.output_tokens.unwrap_or(0));
        usage.total_tokens = prompt.saturating_add(usage.completion_tokens);
        usage.prompt_tokens_details = Some(PromptTokensDetails {
            cached_tokens: Some(read),
            cache_creation_tokens: Some(written),
        });
        usage
    }
}

/// The OpenAI `finish_reason` for an Anthropic `stop_reason`.
fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // `end_turn`, `stop_sequence`, `pause_turn` (a long turn the server paused: what was
        // said so far is a whole answer to the client), and reasons added later.
        _ => "stop",
    }
}

/// One event of a Messages stream, by its `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: MessageStart,
    },
    ContentBlockStart {
        #[serde(default)]
        index: u32,
        #[serde(default)]
        content_block: Option<StartBlock>,
    },
    ContentBlockDelta {
        #[serde(default)]
        index: u32,
        delta: BlockDelta,
    },
    MessageDelta {
        #[serde(default)]
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<AnthropicUsage>,
    },
    MessageStop,
    Error,
    /// `ping`, `content_block_stop`, and any type added later.
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct MessageStart {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    /// A fragment of a tool call's input (JSON text).
    InputJsonDelta {
        #[serde(default)]
        partial_json: String,
    },
    /// Thinking, signatures, citations.
    #[serde(other)]
    Other,
}

/// The block a `content_block_start` opens, as far as the translation cares.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlock {
    ToolUse {
        id: String,
        name: String,
    },
    /// Text (whose deltas carry it), thinking, and the rest.
    #[serde(other)]
    Other,
}

/// What an open `tool_use` block becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ToolBlock {
    /// The client's function: OpenAI's tool call of this index.
    Call(u32),
    /// The format tool ([`JSON_TOOL_NAME`]): its input is the answer's text.
    Json,
}

#[derive(Debug, Default, Deserialize)]
struct MessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
}

/// Turns a Messages stream's events into OpenAI chunks, the usage chunk and the end.
#[derive(Debug)]
pub(crate) struct StreamTranslator {
    /// The chunks' `model` (the relay sets its own anyway).
    model: String,
    /// The chunks' `id`: the message's.
    id: String,
    created: u64,
    usage: AnthropicUsage,
    stop_reason: Option<String>,
    /// Whether `message_start` came, and with it the first chunk.
    started: bool,
    /// The request asked for JSON through the format tool ([`JSON_TOOL_NAME`]).
    pub(crate) json_mode: bool,
    /// The `tool_use` blocks opened so far, by their Anthropic index.
    tool_blocks: Vec<(u32, ToolBlock)>,
    /// The client's tool calls so far.
    calls: u32,
}

impl StreamTranslator {
    pub(crate) fn new(model: String) -> Self {
        Self {
            model,
            id: String::new(),
            created: unix_now(),
            usage: AnthropicUsage::default(),
            stop_reason: None,
            started: false,
            json_mode: false,
            tool_blocks: Vec::new(),
            calls: 0,
        }
    }

    /// Translates one event onto `out`. `Err` is also pushed onto `out` (it ends the stream);
    /// it is returned so that the caller can log the event that caused it.
    pub(crate) fn event(
        &mut self,
        event: &SseEvent,
        out: &mut VecDeque<Result<UpstreamEvent, UpstreamError>>,
    ) -> Result<(), UpstreamError> {
        let result = self.translate(event, out);
        if let Err(error) = &result {
            out.push_back(Err(error.clone()));
        }
        result
    }

    fn translate(
        &mut self,
        event: &SseEvent,
        out: &mut VecDeque<Result<UpstreamEvent, UpstreamError>>,
    ) -> Result<(), UpstreamError> {
        if event.is("error") {
            return Err(reported(event.data.as_bytes()));
        }
        let parsed: StreamEvent = serde_json::from_str(&event.data).map_err(|e| {
            UpstreamError::Protocol(format!("an Anthropic event that cannot be read: {e}"))
        })?;
        match parsed {
            StreamEvent::MessageStart { message } => {
                if let Some(id) = message.id {
                    self.id = id;
                }
                if let Some(usage) = message.usage {
                    self.usage.update(usage);
                }
                self.started = true;
                let delta = Delta {
                    role: Some(Role::Assistant),
                    content: Some(String::new()),
                    tool_calls: None,
                };
                out.push_back(self.chunk(delta, None));
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block: Some(StartBlock::ToolUse { id, name }),
            } => {
                self.check_started()?;
                if self.json_mode && name == JSON_TOOL_NAME {
                    self.tool_blocks.push((index, ToolBlock::Json));
                    return Ok(());
                }
                let call = self.calls;
                self.calls += 1;
                self.tool_blocks.push((index, ToolBlock::Call(call)));
                let opened = ToolCallDelta {
                    index: call,
                    id: Some(id),
                    kind: Some(ToolKind::Function),
                    function: FunctionCallDelta {
                        name: Some(name),
                        arguments: Some(String::new()),
                    },
                };
                out.push_back(self.chunk(calls_delta(opened), None));
            }
            StreamEvent::ContentBlockStart { .. } => {}
            StreamEvent::ContentBlockDelta { delta: BlockDelta::TextDelta { text }, .. } => {
                self.check_started()?;
                out.push_back(self.chunk(text_delta(text), None));
            }
            StreamEvent::ContentBlockDelta {
                index,
                delta: BlockDelta::InputJsonDelta { partial_json },
            } => {
                self.check_started()?;
                let block = self.tool_blocks.iter().rev().find(|(at, _)| *at == index);
                match block.map(|(_, block)| *block) {
                    _ if partial_json.is_empty() => {}
                    Some(ToolBlock::Json) => {
                        out.push_back(self.chunk(text_delta(partial_json), None));
                    }
                    Some(ToolBlock::Call(call)) => {
                        let more = ToolCallDelta {
                            index: call,
                            id: None,
                            kind: None,
                            function: FunctionCallDelta {
                                name: None,
                                arguments: Some(partial_json),
                            },
                        };
                        out.push_back(self.chunk(calls_delta(more), None));
                    }
                    // Input of a block that was never opened as a tool call: nothing to add to.
                    None => {}
                }
            }
            StreamEvent::ContentBlockDelta { delta: BlockDelta::Other, .. } => {}
            StreamEvent::MessageDelta { delta, usage } => {
                self.check_started()?;
                if delta.stop_reason.is_some() {
                    self.stop_reason = delta.stop_reason;
                }
                if let Some(usage) = usage {
                    self.usage.update(usage);
                }
            }
            StreamEvent::MessageStop => {
                self.check_started()?;
                let mut reason = finish_reason(self.stop_reason.as_deref());
                if self.json_mode && reason == "tool_calls" && self.calls == 0 {
                    // Only the format tool was called: to the client, a finished JSON answer.
                    reason = "stop";
                }
                out.push_back(self.chunk(Delta::default(), Some(reason)));
                out.push_back(self.encode(Vec::new(), Some(self.usage.to_openai())));
                out.push_back(Ok(UpstreamEvent::Done));
            }
            StreamEvent::Error => return Err(reported(event.data.as_bytes())),
            StreamEvent::Other => {}
        }
        Ok(())
    }

    /// Content before `message_start` would be a chunk without an id: not a Messages stream.
    fn check_started(&self) -> Result<(), UpstreamError> {
        if self.started {
            Ok(())
        } else {
            Err(UpstreamError::Protocol("an Anthropic stream without message_start".into()))
        }
    }

    fn chunk(
        &self,
        delta: Delta,
        finish_reason: Option<&str>,
    ) -> Result<UpstreamEvent, UpstreamError> {
        let choice = ChunkChoice { index: 0, delta, finish_reason: finish_reason.map(Into::into) };
        self.encode(vec![choice], None)
    }

    fn encode(
        &self,
        choices: Vec<ChunkChoice>,
        usage: Option<Usage>,
    ) -> Result<UpstreamEvent, UpstreamError> {
        let chunk = ChatCompletionChunk {
            id: self.id.clone(),
            object: CHUNK_OBJECT.into(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        };
        serde_json::to_string(&chunk)
            .map(UpstreamEvent::Data)
            .map_err(|e| UpstreamError::Protocol(format!("cannot encode a chunk: {e}")))
    }
}

fn text_delta(text: String) -> Delta {
    Delta { content: Some(text), ..Delta::default() }
}

fn calls_delta(call: ToolCallDelta) -> Delta {
    Delta { tool_calls: Some(vec![call]), ..Delta::default() }
}

/// What an `error` in place of an answer or an event says, by its `error.type`: the errors
/// Anthropic also answers with a status (overloaded, an API error, a rate limit) are reported as
/// that status, so that before the first event they fall back to the next target like a 529,
/// a 500 or a 429 head; any other (or an unreadable one) is [`UpstreamError::Reported`].
fn reported(data: &[u8]) -> UpstreamError {
    #[derive(Deserialize)]
    struct Report {
        error: Detail,
    }
    #[derive(Deserialize)]
    struct Detail {
        #[serde(rename = "type")]
        kind: String,
    }
    let status = match serde_json::from_slice::<Report>(data) {
        Ok(report) => match report.error.kind.as_str() {
            "overloaded_error" => 529,
            "api_error" => 500,
            "rate_limit_error" => 429,
            _ => return UpstreamError::Reported,
        },
        Err(_) => return UpstreamError::Reported,
    };
    UpstreamError::Status { status, retry_after: None }
}

/// A whole Messages answer, as far as the relay reads it.
#[derive(Debug, Deserialize)]
struct WholeMessage {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    content: Option<Vec<ContentBlock>>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentBlock {
    Text {
        text: String,
    },
    /// (A tree rather than raw text: a tagged enum's fields are buffered, which raw text
    /// cannot be.)
    ToolUse {
        id: String,
        name: String,
        input: serde_json::Value,
    },
    /// Thinking and the rest: not part of the answer.
    #[serde(other)]
    Other,
}

/// A whole Messages answer as an OpenAI `chat.completion` for `model`; with `json_mode`, the
/// format tool's input is the answer's text.
fn completion_from_message(
    body: &[u8],
    model: &str,
    json_mode: bool,
) -> Result<Bytes, UpstreamError> {
    let message: WholeMessage = serde_json::from_slice(body).map_err(|e| {
        UpstreamError::Protocol(format!("an Anthropic answer that cannot be read: {e}"))
    })?;
    if message.kind.as_deref() == Some("error") {
        return Err(reported(body));
    }
    let Some(content) = message.content else {
        return Err(UpstreamError::Protocol("an Anthropic answer without content".into()));
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in content {
        match block {
            ContentBlock::Text { text: more } => text.push_str(&more),
            ContentBlock::ToolUse { name, input, .. } if json_mode && name == JSON_TOOL_NAME => {
                text.push_str(&input.to_string());
            }
            ContentBlock::ToolUse { id, name, input } => calls.push(ToolCall {
                id,
                kind: ToolKind::Function,
                function: FunctionCall { name, arguments: input.to_string() },
            }),
            ContentBlock::Other => {}
        }
    }
    let mut finish = finish_reason(message.stop_reason.as_deref());
    if json_mode && finish == "tool_calls" && calls.is_empty() {
        finish = "stop";
    }
    let tool_calls = match calls.is_empty() {
        true => None,
        false => Some(
            RawJson::encode(&calls)
                .map_err(|e| UpstreamError::Protocol(format!("cannot encode tool calls: {e}")))?,
        ),
    };
    let completion = ChatCompletion {
        id: message.id.unwrap_or_default(),
        object: COMPLETION_OBJECT.into(),
        created: unix_now(),
        model: model.to_owned(),
        choices: vec![CompletionChoice {
            index: 0,
            message: ChatMessage { tool_calls, ..ChatMessage::new(Role::Assistant, text) },
            finish_reason: Some(finish.to_owned()),
        }],
        usage: message.usage.unwrap_or_default().to_openai(),
    };
    serde_json::to_vec(&completion)
        .map(Bytes::from)
        .map_err(|e| UpstreamError::Protocol(format!("cannot encode an answer: {e}")))
}

#[cfg(test)]
mod tests {
    use confab_protocol::sse::SseParser;
    use serde_json::{Value, json};

    use super::*;

    /// The stream of Anthropic's streaming docs ("Basic streaming request"), as sent.
    const BASIC: &str = r#"event: message_start
data: {"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [], "model": "claude-opus-4-6", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}

event: content_block_stop
data: {"type": "content_block_stop", "index": 0}

event: message_delta
data: {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, "usage": {"output_tokens": 15}}

event: message_stop
data: {"type": "message_stop"}

"#;

    /// What a stream becomes: each translated event as JSON (chunks) or a marker, up to the
    /// first end, as `common::sse_stream` hands them on.
    fn translate(sse: &str) -> Vec<Result<Value, UpstreamError>> {
        let mut translator = StreamTranslator::new("claude-test".into());
        let mut out = VecDeque::new();
        for event in SseParser::default().push(sse.as_bytes()) {
            let _ = translator.event(&event, &mut out);
        }
        let mut events = Vec::new();
        for item in out {
            let end = !matches!(item, Ok(UpstreamEvent::Data(_)));
            events.push(item.map(|event| match event {
                UpstreamEvent::Data(json) => {
                    let chunk: ChatCompletionChunk = serde_json::from_str(&json).unwrap();
                    assert_eq!(chunk.object, CHUNK_OBJECT);
                    assert_eq!(chunk.model, "claude-test");
                    assert_eq!(chunk.id, "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY");
                    serde_json::from_str(&json).unwrap()
                }
                UpstreamEvent::Done => json!("[DONE]"),
            }));
            if end {
                break;
            }
        }
        events
    }

    /// `BASIC` with its last events replaced: a stop reason and a `message_delta` usage.
    fn basic_ending(stop_reason: &str, usage: &str) -> String {
        let head = &BASIC[..BASIC.find("event: message_delta").unwrap()];
        format!(
            "{head}event: message_delta\ndata: {{\"type\": \"message_delta\", \"delta\": {{\"stop_reason\": \"{stop_reason}\", \"stop_sequence\": null}}, \"usage\": {usage}}}\n\nevent: message_stop\ndata: {{\"type\": \"message_stop\"}}\n\n"
        )
    }

    fn content(events: &[Result<Value, UpstreamError>]) -> String {
        events
            .iter()
            .filter_map(|e| e.as_ref().ok()?["choices"][0]["delta"]["content"].as_str())
            .collect()
    }

    /// The finish chunk's reason and the usage chunk's usage, from a stream's last three events.
    fn ending(events: &[Result<Value, UpstreamError>]) -> (Value, Value) {
        let [.., finish, usage, done] = events else { panic!("too short: {events:?}") };
        assert_eq!(done, &Ok(json!("[DONE]")));
        let (finish, usage) = (finish.clone().unwrap(), usage.clone().unwrap());
        assert_eq!(finish["choices"][0]["delta"], json!({}));
        assert_eq!(usage["choices"], json!([]));
        (finish["choices"][0]["finish_reason"].clone(), usage["usage"].clone())
    }

    #[test]
    fn the_documented_stream_becomes_openai_chunks_usage_and_done() {
        let events = translate(BASIC);
        assert_eq!(events.len(), 6, "{events:?}");
        let first = events[0].as_ref().unwrap();
        assert_eq!(first["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
        assert_eq!(first["choices"][0]["finish_reason"], Value::Null);
        assert_eq!(content(&events), "Hello!");
        let (reason, usage) = ending(&events);
        assert_eq!(reason, "stop");
        assert_eq!(
            usage,
            json!({"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40,
                   "prompt_tokens_details": {"cached_tokens": 0, "cache_creation_tokens": 0}})
        );
    }

    #[test]
    fn events_are_told_apart_by_their_type_not_their_event_name() {
        let without_names: String = BASIC
            .lines()
            .filter(|line| !line.starts_with("event:"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(translate(&without_names), translate(BASIC));
    }

    #[test]
    fn every_stop_reason_maps_to_its_openai_finish_reason() {
        for (stop_reason, finish) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            ("pause_turn", "stop"),
            ("model_context_window_exceeded", "length"),
            ("a_reason_added_later", "stop"),
        ] {
            let events = translate(&basic_ending(stop_reason, r#"{"output_tokens": 15}"#));
            assert_eq!(ending(&events).0, finish, "{stop_reason}");
        }
    }

    #[test]
    fn cache_writes_and_reads_count_in_the_prompt_and_in_its_details() {
        // The prompt caching docs' usage shape: cache counts on `message_start`.
        let sse = BASIC.replace(
            r#""usage": {"input_tokens": 25, "output_tokens": 1}"#,
            r#""usage": {"input_tokens": 21, "cache_creation_input_tokens": 188086, "cache_read_input_tokens": 1800, "output_tokens": 1}"#,
        );
        let (_, usage) = ending(&translate(&sse));
        assert_eq!(
            usage,
            json!({"prompt_tokens": 189_907, "completion_tokens": 15, "total_tokens": 189_922,
                   "prompt_tokens_details": {"cached_tokens": 1800, "cache_creation_tokens": 188_086}})
        );
        let usage: Usage = serde_json::from_value(usage).unwrap();
        assert_eq!((usage.cache_read_tokens(), usage.cache_write_tokens()), (1800, 188_086));
    }

    #[test]
    fn output_tokens_are_cumulative_and_the_last_count_wins() {
        let head = &BASIC[..BASIC.find("event: message_delta").unwrap()];
        let sse = format!(
            "{head}{}{}{}event: message_stop\ndata: {{\"type\": \"message_stop\"}}\n\n",
            "data: {\"type\": \"message_delta\", \"delta\": {\"stop_reason\": null}, \"usage\": {\"output_tokens\": 10}}\n\n",
            "data: {\"type\": \"message_delta\", \"delta\": {\"stop_reason\": \"end_turn\"}, \"usage\": {\"output_tokens\": 15}}\n\n",
            // No usage: the counts so far stand.
            "data: {\"type\": \"message_delta\", \"delta\": {}}\n\n",
        );
        let (reason, usage) = ending(&translate(&sse));
        assert_eq!(reason, "stop");
        assert_eq!(
            (usage["prompt_tokens"].clone(), usage["completion_tokens"].clone()),
            (json!(25), json!(15))
        );
    }

    #[test]
    fn a_message_delta_with_input_counts_replaces_those_of_message_start() {
        // Newer API versions repeat every count, cumulatively, on `message_delta`.
        let usage = r#"{"input_tokens": 30, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 40, "output_tokens": 7}"#;
        let (_, usage) = ending(&translate(&basic_ending("end_turn", usage)));
        assert_eq!(
            usage,
            json!({"prompt_tokens": 70, "completion_tokens": 7, "total_tokens": 77,
                   "prompt_tokens_details": {"cached_tokens": 40, "cache_creation_tokens": 0}})
        );
    }

    #[test]
    fn thinking_blocks_are_skipped_and_tool_use_becomes_tool_call_chunks() {
        // The extended thinking docs' and the tool use docs' block sequences.
        let head = &BASIC[..BASIC.find("event: content_block_start").unwrap()];
        let tail = &BASIC[BASIC.find("event: content_block_delta").unwrap()..];
        let sse = format!(
            "{head}{}{}{}{}{}{}{}{}{}",
            "event: content_block_start\ndata: {\"type\": \"content_block_start\", \"index\": 0, \"content_block\": {\"type\": \"thinking\", \"thinking\": \"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"thinking_delta\", \"thinking\": \"Let me solve this step by step\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"signature_delta\", \"signature\": \"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\": \"content_block_stop\", \"index\": 0}\n\n",
            "event: content_block_start\ndata: {\"type\": \"content_block_start\", \"index\": 1, \"content_block\": {\"type\": \"tool_use\", \"id\": \"toolu_01T1x1fJ34qAmk2tNTrN7Up6\", \"name\": \"get_weather\", \"input\": {}}}\n\n",
            "event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"index\": 1, \"delta\": {\"type\": \"input_json_delta\", \"partial_json\": \"{\\\"location\\\": \\\"San Fra\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\": \"content_block_stop\", \"index\": 1}\n\n",
            "event: content_block_start\ndata: {\"type\": \"content_block_start\", \"index\": 2, \"content_block\": {\"type\": \"text\", \"text\": \"\"}}\n\n",
            tail.replace("\"index\": 0", "\"index\": 2").replace("end_turn", "tool_use"),
        );
        let events = translate(&sse);
        assert_eq!(content(&events), "Hello!");
        assert_eq!(events.len(), 8, "{events:?}");
        let calls: Vec<&Value> =
            events[1..3].iter().map(|e| &e.as_ref().unwrap()["choices"][0]["delta"]).collect();
        assert_eq!(
            calls,
            [
                &json!({"tool_calls": [{"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                    "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
                &json!({"tool_calls": [{"index": 0,
                    "function": {"arguments": "{\"location\": \"San Fra"}}]}),
            ]
        );
        assert_eq!(ending(&events).0, "tool_calls");
    }

    #[test]
    fn an_error_event_after_the_200_ends_the_stream_as_reported() {
        let head = &BASIC[..BASIC.find("event: content_block_stop").unwrap()];
        let error = "event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n";
        let events = translate(&format!("{head}{error}"));
        // Overloaded: reported as Anthropic's 529 status would be.
        let overloaded = UpstreamError::Status { status: 529, retry_after: None };
        assert_eq!(events.last(), Some(&Err(overloaded.clone())));
        assert_eq!(content(&events), "Hello!");
        // Told by its type alone too, and by its event name alone.
        let unnamed = error.trim_start_matches("event: error\n");
        assert_eq!(translate(&format!("{head}{unnamed}")).last(), Some(&Err(overloaded)));
        let odd = "event: error\ndata: Overloaded\n\n";
        assert_eq!(translate(&format!("{head}{odd}")).last(), Some(&Err(UpstreamError::Reported)));
        // The errors Anthropic also answers with a status, as that status; any other, reported.
        for (kind, expected) in [
            ("api_error", UpstreamError::Status { status: 500, retry_after: None }),
            ("rate_limit_error", UpstreamError::Status { status: 429, retry_after: None }),
            ("invalid_request_error", UpstreamError::Reported),
            ("permission_error", UpstreamError::Reported),
        ] {
            let error = format!(
                "event: error\ndata: {{\"type\": \"error\", \"error\": {{\"type\": \"{kind}\"}}}}\n\n"
            );
            assert_eq!(translate(&format!("{head}{error}")).last(), Some(&Err(expected)), "{kind}");
        }
    }

    #[test]
    fn unknown_event_types_are_ignored_and_unreadable_events_refused() {
        let head = &BASIC[..BASIC.find("event: message_stop").unwrap()];
        let later = "event: something_new\ndata: {\"type\": \"something_new\", \"x\": 1}\n\n";
        let events = translate(&BASIC.replace(head, &format!("{head}{later}")));
        assert_eq!(events, translate(BASIC));

        let garbage = format!("{head}data: not json\n\n");
        assert!(matches!(translate(&garbage).last(), Some(Err(UpstreamError::Protocol(_)))));
        let headless = "data: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_delta\", \"text\": \"Hi\"}}\n\n";
        assert!(matches!(translate(headless).last(), Some(Err(UpstreamError::Protocol(_)))));
    }

    fn chat(value: Value) -> ChatRequest {
        serde_json::from_value(value).unwrap()
    }

    fn messages_request(request: &ChatRequest, stream: bool) -> Value {
        serde_json::to_value(MessagesRequest::from_chat(request, stream)).unwrap()
    }

    #[test]
    fn system_and_developer_messages_become_system_and_turns_alternate() {
        let request = chat(json!({
            "model": "claude-sonnet-4-5",
            "messages": [
                {"role": "system", "content": "You are the shop's assistant."},
                {"role": "user", "content": "Hello"},
                {"role": "developer", "content": "Answer briefly."},
                {"role": "user", "content": "Are you open?"},
                {"role": "assistant", "content": "Yes."},
                {"role": "assistant", "content": "Until 6."},
                {"role": "user", "content": "  "},
                {"role": "user", "content": "Thanks"},
            ],
            "max_tokens": 300,
            "stream": true,
        }));
        assert_eq!(
            messages_request(&request, true),
            json!({
                "model": "claude-sonnet-4-5",
                "system": "You are the shop's assistant.\n\nAnswer briefly.",
                "messages": [
                    {"role": "user", "content": "Hello\n\nAre you open?"},
                    {"role": "assistant", "content": "Yes.\n\nUntil 6."},
                    {"role": "user", "content": "Thanks"},
                ],
                "max_tokens": 300,
                "stream": true,
            })
        );
    }

    #[test]
    fn sampling_settings_are_translated_into_anthropic_ranges_and_names() {
        let request = chat(json!({
            "model": "m",
            "messages": [{"role": "user", "content": "Hi"}],
            "temperature": 1.5,
            "top_p": 0.9,
            "stop": ["END", "STOP"],
            "presence_penalty": 0.5,
            "user": "visitor-hash",
        }));
        assert_eq!(
            messages_request(&request, false),
            json!({
                "model": "m",
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": DEFAULT_MAX_TOKENS,
                "temperature": 1.0,
                "top_p": 0.9f32,
                "stop_sequences": ["END", "STOP"],
                "metadata": {"user_id": "visitor-hash"},
            })
        );
        let one = chat(json!({
            "messages": [{"role": "user", "content": "Hi"}],
            "temperature": 0.25, "stop": "END", "max_tokens": 50, "max_completion_tokens": 40,
        }));
        let translated = messages_request(&one, true);
        assert_eq!(translated["temperature"], 0.25);
        assert_eq!(translated["stop_sequences"], json!(["END"]));
        assert_eq!(translated["max_tokens"], 40);
        assert_eq!(translated["stream"], true);
    }

    #[test]
    fn a_whole_answer_becomes_a_chat_completion() {
        // The Messages API docs' example answer, with cache counts.
        let body = br#"{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","content":[{"type":"thinking","thinking":"...","signature":"x"},{"type":"text","text":"Hello!"}],"model":"claude-opus-4-6","stop_reason":"max_tokens","stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":null,"cache_read_input_tokens":30,"output_tokens":6}}"#;
        let answer = completion_from_message(body, "claude-test", false).unwrap();
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert!(answer["created"].as_u64().unwrap() > 0);
        assert_eq!(
            answer,
            json!({
                "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
                "object": "chat.completion",
                "created": answer["created"],
                "model": "claude-test",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello!"},
                    "finish_reason": "length",
                }],
                "usage": {"prompt_tokens": 42, "completion_tokens": 6, "total_tokens": 48,
                          "prompt_tokens_details": {"cached_tokens": 30, "cache_creation_tokens": 0}},
            })
        );
        let error =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let overloaded = UpstreamError::Status { status: 529, retry_after: None };
        assert_eq!(completion_from_message(error, "m", false), Err(overloaded));
        let refused = br#"{"type":"error","error":{"type":"invalid_request_error"}}"#;
        assert_eq!(completion_from_message(refused, "m", false), Err(UpstreamError::Reported));
        assert!(matches!(
            completion_from_message(b"{}", "m", false),
            Err(UpstreamError::Protocol(_))
        ));
    }

    fn weather_tools() -> Value {
        json!([
            {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
            {"type": "function", "function": {"name": "get_time"}},
        ])
    }

    #[test]
    fn tools_and_tool_choice_are_translated() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}], "tools": weather_tools()});
        let translated = messages_request(&chat(base.clone()), true);
        assert_eq!(
            translated["tools"],
            json!([
                {"name": "get_weather", "description": "Weather now",
                 "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
                {"name": "get_time", "input_schema": {"type": "object"}},
            ])
        );
        assert_eq!(translated.get("tool_choice"), None);
        for (choice, expected) in [
            (json!("auto"), json!({"type": "auto"})),
            (json!("none"), json!({"type": "none"})),
            (json!("required"), json!({"type": "any"})),
            (
                json!({"type": "function", "function": {"name": "get_time"}}),
                json!({"type": "tool", "name": "get_time"}),
            ),
        ] {
            let mut request = base.clone();
            request["tool_choice"] = choice;
            assert_eq!(messages_request(&chat(request), true)["tool_choice"], expected);
        }
        let mut serial = base.clone();
        serial["parallel_tool_calls"] = json!(false);
        assert_eq!(
            messages_request(&chat(serial), true)["tool_choice"],
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
    }

    #[test]
    fn calls_and_results_become_tool_use_and_tool_result_blocks() {
        let request = chat(json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": "Weather in Paris and Oslo?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
                    {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
                ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "22 C"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": "8 C"},
                {"role": "user", "content": "Thanks; which is warmer?"},
            ],
            "tools": weather_tools(),
        }));
        assert_eq!(
            messages_request(&request, true)["messages"],
            json!([
                {"role": "user", "content": "Weather in Paris and Oslo?"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "22 C"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "8 C"},
                    {"type": "text", "text": "Thanks; which is warmer?"},
                ]},
            ])
        );
    }

    #[test]
    fn a_conversation_that_opens_with_the_assistant_gets_a_user_turn_first() {
        let request = chat(json!({"messages": [
            {"role": "system", "content": "Be kind."},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "assistant", "content": "Ask me anything."},
            {"role": "user", "content": "Hours?"},
        ]}));
        assert_eq!(
            messages_request(&request, false)["messages"],
            json!([
                {"role": "user", "content": "."},
                {"role": "assistant", "content": "Hello! How can I help?\n\nAsk me anything."},
                {"role": "user", "content": "Hours?"},
            ])
        );
    }

    #[test]
    fn a_response_format_becomes_the_forced_json_tool() {
        let format = json!({"type": "json_schema", "json_schema": {"name": "city", "description": "A city",
            "schema": {"type": "object", "properties": {"name": {"type": "string"}}}}});
        let request = chat(
            json!({"messages": [{"role": "user", "content": "Capital of France?"}], "response_format": format}),
        );
        let translated = messages_request(&request, true);
        assert_eq!(
            translated["tools"],
            json!([{"name": "json_tool_call", "description": "A city",
                    "input_schema": {"type": "object", "properties": {"name": {"type": "string"}}}}])
        );
        assert_eq!(translated["tool_choice"], json!({"type": "tool", "name": "json_tool_call"}));
        let object = chat(
            json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"},
            "tools": weather_tools()}),
        );
        let translated = messages_request(&object, true);
        assert_eq!(
            translated["tools"][2],
            json!({"name": "json_tool_call", "input_schema": {"type": "object"}})
        );
        assert_eq!(translated["tool_choice"], json!({"type": "any"}));
    }

    /// A stream whose one block is a `tool_use` named `name`, its input in two fragments.
    fn tool_use_stream(name: &str) -> String {
        let head = &BASIC[..BASIC.find("event: content_block_start").unwrap()];
        format!(
            "{head}{}{}{}{}{}{}",
            format_args!(
                "data: {{\"type\": \"content_block_start\", \"index\": 0, \"content_block\": {{\"type\": \"tool_use\", \"id\": \"toolu_9\", \"name\": \"{name}\", \"input\": {{}}}}}}\n\n"
            ),
            "data: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"input_json_delta\", \"partial_json\": \"\"}}\n\n",
            "data: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"input_json_delta\", \"partial_json\": \"{\\\"name\\\": \"}}\n\n",
            "data: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"input_json_delta\", \"partial_json\": \"\\\"Paris\\\"}\"}}\n\n",
            "data: {\"type\": \"message_delta\", \"delta\": {\"stop_reason\": \"tool_use\"}, \"usage\": {\"output_tokens\": 9}}\n\n",
            "data: {\"type\": \"message_stop\"}\n\n",
        )
    }

    #[test]
    fn the_json_tool_streams_back_as_the_answer_text() {
        let mut translator = StreamTranslator::new("claude-test".into());
        translator.json_mode = true;
        let mut out = VecDeque::new();
        for event in SseParser::default().push(tool_use_stream(JSON_TOOL_NAME).as_bytes()) {
            translator.event(&event, &mut out).unwrap();
        }
        let chunks: Vec<Value> = out
            .into_iter()
            .filter_map(|e| match e.unwrap() {
                UpstreamEvent::Data(data) => Some(serde_json::from_str(&data).unwrap()),
                UpstreamEvent::Done => None,
            })
            .collect();
        let text: String =
            chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
        assert_eq!(text, r#"{"name": "Paris"}"#);
        assert!(chunks.iter().all(|c| c["choices"][0]["delta"].get("tool_calls").is_none()));
        assert_eq!(chunks[chunks.len() - 2]["choices"][0]["finish_reason"], "stop");
        // Without JSON mode, a tool of that name is the client's own.
        let events = translate(&tool_use_stream(JSON_TOOL_NAME));
        assert_eq!(ending(&events).0, "tool_calls");
    }

    #[test]
    fn a_whole_answer_with_tool_use_has_tool_calls_and_no_text() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}],"stop_reason":"tool_use","usage":{"input_tokens":12,"output_tokens":6}}"#;
        let answer: Value =
            serde_json::from_slice(&completion_from_message(body, "m", false).unwrap()).unwrap();
        assert_eq!(
            answer["choices"][0],
            json!({"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}})
        );
        let json_body = String::from_utf8_lossy(body).replace("get_weather", JSON_TOOL_NAME);
        let answer: Value = serde_json::from_slice(
            &completion_from_message(json_body.as_bytes(), "m", true).unwrap(),
        )
        .unwrap();
        assert_eq!(
            answer["choices"][0],
            json!({"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "{\"city\":\"Paris\"}"}})
        );
    }

    #[test]
    fn base_url_is_the_root_without_v1() {
        let settings = |url: &'static str| Settings {
            name: "claude",
            base_url: Some(Box::leak(Box::new(url::Url::parse(url).unwrap()))),
            api_key: Some(Secret::new("sk-ant")),
            connect_timeout: std::time::Duration::from_secs(1),
            demo_token_delay: std::time::Duration::ZERO,
        };
        let provider = AnthropicProvider::new(settings("https://api.anthropic.com")).unwrap();
        assert_eq!(provider.endpoint.url.as_str(), "https://api.anthropic.com/v1/messages");
        let gateway = AnthropicProvider::new(settings("http://gw.example/anthropic")).unwrap();
        assert_eq!(gateway.endpoint.url.as_str(), "http://gw.example/anthropic/v1/messages");
        let error = AnthropicProvider::new(settings("https://api.anthropic.com/v1/")).unwrap_err();
        assert_eq!(error.field, "base_url");
        assert!(error.problem.contains("without `/v1`"), "{}", error.problem);
        let missing = Settings { base_url: None, ..settings("http://x") };
        assert_eq!(
            AnthropicProvider::new(missing).unwrap_err().problem,
            "is required for kind `anthropic`"
        );
    }
}
