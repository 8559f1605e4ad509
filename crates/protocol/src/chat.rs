//! Chat completion requests, responses, streamed chunks and usage.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

use crate::tools::{RawJson, ToolCallDelta};

/// The `object` value of a streamed chunk.
pub const CHUNK_OBJECT: &str = "chat.completion.chunk";
/// The `object` value of a whole (non-streamed) completion.
pub const COMPLETION_OBJECT: &str = "chat.completion";
/// The data line that ends an OpenAI-style event stream.
pub const DONE_SENTINEL: &str = "[DONE]";

/// `POST /v1/chat/completions` request body.
///
/// Unknown fields are accepted and ignored (OpenAI clients send fields Confab does not forward),
/// but the fields below are type-checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ChatRequest {
    /// Optional: a site key runs on its site's model when none is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    /// `null` is read as `false`, as OpenAI does.
    #[serde(
        default,
        deserialize_with = "null_as_false",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub stream: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// The newer OpenAI name for `max_tokens`; the relay treats them alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Functions the model may call (secret keys with the `tools` scope only). Kept as sent:
    /// an OpenAI-compatible upstream gets it byte for byte; see [`crate::Tool`] for its shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<RawJson>,
    /// Whether and which tool the model must call; see [`crate::ToolChoice`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<RawJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// JSON mode or structured output; see [`crate::ResponseFormat`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<RawJson>,
}

impl ChatRequest {
    /// The first parameter that asks for tools or structured output, if any: what a caller
    /// without the `tools` scope is refused for, named as the client wrote it.
    pub fn tool_parameter(&self) -> Option<&'static str> {
        if self.tools.is_some() {
            Some("tools")
        } else if self.tool_choice.is_some() {
            Some("tool_choice")
        } else if self.parallel_tool_calls.is_some() {
            Some("parallel_tool_calls")
        } else if self.response_format.is_some() {
            Some("response_format")
        } else if self.messages.iter().any(|m| m.tool_calls.is_some()) {
            Some("messages[].tool_calls")
        } else if self.messages.iter().any(|m| m.role == Role::Tool) {
            Some("messages[].role: \"tool\"")
        } else {
            None
        }
    }
}

fn null_as_false<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(deserializer)?.unwrap_or(false))
}

/// `stream_options` of a chat request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// `stop`: one sequence or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// Who wrote a message. The legacy `function` role is rejected as unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    /// OpenAI's newer name for a system message; treated exactly like `system`.
    Developer,
    User,
    Assistant,
    /// The result of a tool call (`tool_call_id` names the call): server-side callers with the
    /// `tools` scope only. Never part of a widget's conversation.
    Tool,
}

impl Role {
    /// The wire name (what serde writes): `system`, `developer`, `user`, `assistant`, `tool`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    /// The role with this wire name.
    pub fn from_name(name: &str) -> Option<Role> {
        [Role::System, Role::Developer, Role::User, Role::Assistant, Role::Tool]
            .into_iter()
            .find(|role| role.as_str() == name)
    }

    /// True for the roles that carry instructions rather than conversation.
    pub fn is_instruction(self) -> bool {
        matches!(self, Role::System | Role::Developer)
    }
}

/// One message of a conversation. Content may arrive as a string, as an array of text parts or
/// as `null` (an assistant message that only calls tools); it is always text once parsed, and
/// `null` is empty text.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    #[serde(deserialize_with = "deserialize_content")]
    pub content: String,
    #[serde(default)]
    pub name: Option<String>,
    /// An assistant message's calls (see [`crate::ToolCall`]), kept as sent.
    #[serde(default)]
    pub tool_calls: Option<RawJson>,
    /// A `tool` message's answer to this call.
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into(), name: None, tool_calls: None, tool_call_id: None }
    }

    /// The bytes it adds to a prompt: its text and its calls' JSON.
    pub fn prompt_bytes(&self) -> usize {
        self.content.len() + self.tool_calls.as_ref().map_or(0, |calls| calls.get().len())
    }
}

/// Written as OpenAI writes it: an assistant message with calls and no text has `content: null`,
/// and absent options are left out.
impl Serialize for ChatMessage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = 2
            + usize::from(self.name.is_some())
            + usize::from(self.tool_calls.is_some())
            + usize::from(self.tool_call_id.is_some());
        let mut message = serializer.serialize_struct("ChatMessage", fields)?;
        message.serialize_field("role", &self.role)?;
        if self.content.is_empty() && self.tool_calls.is_some() {
            message.serialize_field("content", &Option::<&str>::None)?;
        } else {
            message.serialize_field("content", &self.content)?;
        }
        if let Some(name) = &self.name {
            message.serialize_field("name", name)?;
        }
        if let Some(calls) = &self.tool_calls {
            message.serialize_field("tool_calls", calls)?;
        }
        if let Some(id) = &self.tool_call_id {
            message.serialize_field("tool_call_id", id)?;
        }
        message.end()
    }
}

/// Accepts `"text"` or `[{"type":"text","text":"..."}, ...]` and joins the parts. Any other part
/// type (images, audio) is rejected with a message that says so.
fn deserialize_content<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    struct ContentVisitor;

    #[derive(Deserialize)]
    struct Part {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        text: Option<String>,
    }

    impl<'de> Visitor<'de> for ContentVisitor {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string, an array of text parts or null")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }

        fn visit_unit<E: de::Error>(self) -> Result<String, E> {
            Ok(String::new())
        }

        fn visit_none<E: de::Error>(self) -> Result<String, E> {
            Ok(String::new())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<String, A::Error> {
            let mut text = String::new();
            while let Some(part) = seq.next_element::<Part>()? {
                if part.kind != "text" {
                    return Err(de::Error::custom(format_args!(
                        "content parts of type `{}` are not supported; only `text` parts are",
                        part.kind
                    )));
                }
                let Some(part_text) = part.text else {
                    return Err(de::Error::missing_field("text"));
                };
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(&part_text);
            }
            Ok(text)
        }
    }

    deserializer.deserialize_any(ContentVisitor)
}

/// Token counts, as reported by the upstream (or estimated by the relay when it reports none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Usage {
    /// All the prompt's tokens, those read from and written to a prompt cache included.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// Where the prompt's tokens came from, when the upstream says. Absent from the JSON when
    /// unknown (so an answer without it passes through as it came), and ignored, rather than
    /// refused, when it has another shape: the counts above are what matter.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_details"
    )]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    /// What `completion_tokens` is made of, where the provider says (left out otherwise, so
    /// that an answer without it is encoded as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

impl Usage {
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: None,
            completion_tokens_details: None,
        }
    }

    /// Prompt tokens read from the provider's prompt cache (0 when not reported).
    pub fn cache_read_tokens(&self) -> u64 {
        self.prompt_tokens_details.and_then(|d| d.cached_tokens).unwrap_or(0)
    }

    /// Prompt tokens written to the provider's prompt cache (0 when not reported).
    pub fn cache_write_tokens(&self) -> u64 {
        self.prompt_tokens_details.and_then(|d| d.cache_creation_tokens).unwrap_or(0)
    }
}

/// `usage.prompt_tokens_details`: the part of `prompt_tokens` a provider's prompt cache served
/// or stored, which providers bill at other prices than the rest of the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PromptTokensDetails {
    /// Prompt tokens read from the prompt cache (OpenAI's field; Anthropic's
    /// `cache_read_input_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    /// Confab's extension: prompt tokens written to the prompt cache (Anthropic's
    /// `cache_creation_input_tokens`). OpenAI reports none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_tokens: Option<u64>,
}

/// `prompt_tokens_details` when it has the expected shape, `None` for anything else (`null`,
/// counts of another type, another shape altogether).
fn lenient_details<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<PromptTokensDetails>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Lenient {
        Details(PromptTokensDetails),
        Other(de::IgnoredAny),
    }
    Ok(match Lenient::deserialize(deserializer)? {
        Lenient::Details(details) => Some(details),
        Lenient::Other(_) => None,
    })
}

/// `usage.completion_tokens_details`: the parts of an answer's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CompletionTokensDetails {
    /// Tokens the model spent thinking before it answered (Gemini's `thoughtsTokenCount`).
    /// They are output the client does not see, and are counted (and billed) in
    /// `completion_tokens`.
    #[serde(default)]
    pub reasoning_tokens: u64,
}

/// One `chat.completion.chunk` event of a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// The part of a message a chunk adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Calls the model is making, a fragment at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// A whole `chat.completion` (the answer to a request without `stream`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionChoice {
    pub index: u32,
    pub message: ChatMessage,
    pub finish_reason: Option<String>,
}

/// `GET /v1/models` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<Model>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
    /// With `?detail=true` only: what else the relay knows of the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<ModelDetail>,
}

/// `GET /v1/models?detail=true`: a model's targets, context length and prices, where
/// configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelDetail {
    /// The `<upstream>:<model>` targets that serve it, in the order they are tried.
    pub targets: Vec<String>,
    /// The most tokens of prompt and answer together, when the operator set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u32>,
    /// What its first target costs, when priced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<ModelPricing>,
}

/// A model's prices, in micro-dollars (millionths of a US dollar) per million tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelPricing {
    pub input_per_million: u64,
    pub output_per_million: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_per_million: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_million: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_the_serde_names() {
        for role in [Role::System, Role::Developer, Role::User, Role::Assistant] {
            assert_eq!(serde_json::to_value(role).unwrap(), role.as_str());
            assert_eq!(Role::from_name(role.as_str()), Some(role));
        }
        assert_eq!(Role::from_name("function"), None);
    }

    #[test]
    fn content_parts_are_joined_into_text() {
        let message: ChatMessage = serde_json::from_str(
            r#"{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}"#,
        )
        .unwrap();
        assert_eq!(message.content, "a\nb");
    }

    #[test]
    fn image_parts_are_rejected_with_a_reason() {
        let err = serde_json::from_str::<ChatMessage>(
            r#"{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("`image_url` are not supported"), "{err}");
    }

    #[test]
    fn unknown_roles_are_rejected() {
        let err = serde_json::from_str::<ChatMessage>(r#"{"role":"function","content":"x"}"#)
            .unwrap_err();
        assert!(err.to_string().starts_with("unknown variant `function`"), "{err}");
    }

    #[test]
    fn tool_messages_round_trip_in_openai_shape() {
        for text in [
            r#"{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]}"#,
            r#"{"role":"tool","content":"22 C","tool_call_id":"call_1"}"#,
            r#"{"role":"user","content":"hi","name":"ann"}"#,
        ] {
            let message: ChatMessage = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_string(&message).unwrap(), text);
        }
        let request: ChatRequest = serde_json::from_str(
            r#"{"messages":[{"role":"user","content":"hi"}],"tools":[ {"type":"function"} ],"response_format":{"type":"json_object"}}"#,
        )
        .unwrap();
        assert_eq!(request.tools.as_ref().unwrap().get(), r#"[ {"type":"function"} ]"#);
        assert_eq!(request.tool_parameter(), Some("tools"));
        let plain = ChatRequest { messages: vec![ChatMessage::new(Role::User, "hi")], ..request };
        let plain = ChatRequest { tools: None, response_format: None, ..plain };
        assert_eq!(plain.tool_parameter(), None);
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#"{"messages":[{"role":"user","content":"hi"}]}"#
        );
    }

    #[test]
    fn a_usage_chunk_has_no_choices() {
        let chunk: ChatCompletionChunk = serde_json::from_str(
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],
               "usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
        )
        .unwrap();
        assert!(chunk.choices.is_empty());
        assert_eq!(chunk.usage, Some(Usage::new(3, 4)));
    }

    #[test]
    fn usage_without_details_is_encoded_as_before_and_with_them_keeps_them() {
        let plain = serde_json::to_string(&Usage::new(3, 4)).unwrap();
        assert_eq!(plain, r#"{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}"#);

        let details = Some(CompletionTokensDetails { reasoning_tokens: 3 });
        let thinking = Usage { completion_tokens_details: details, ..Usage::new(3, 4) };
        let json = serde_json::to_string(&thinking).unwrap();
        assert_eq!(
            json,
            r#"{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7,"completion_tokens_details":{"reasoning_tokens":3}}"#
        );
        assert_eq!(serde_json::from_str::<Usage>(&json).unwrap(), thinking);
    }

    #[test]
    fn cache_details_are_read_and_odd_ones_ignored() {
        let usage: Usage = serde_json::from_str(
            r#"{"prompt_tokens":30,"completion_tokens":4,"total_tokens":34,
               "prompt_tokens_details":{"cached_tokens":20,"audio_tokens":0,"cache_creation_tokens":5}}"#,
        )
        .unwrap();
        assert_eq!((usage.cache_read_tokens(), usage.cache_write_tokens()), (20, 5));
        for odd in [r#"null"#, r#"{"cached_tokens":"many"}"#, r#""x""#] {
            let text = format!(
                r#"{{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7,"prompt_tokens_details":{odd}}}"#
            );
            assert_eq!(serde_json::from_str::<Usage>(&text).unwrap(), Usage::new(3, 4), "{odd}");
        }
    }

    #[test]
    fn usage_without_details_is_written_without_them() {
        let json = serde_json::to_string(&Usage::new(3, 4)).unwrap();
        assert_eq!(json, r#"{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}"#);
    }
}
