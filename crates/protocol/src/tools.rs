//! Function calling and structured output, for server-side callers: the typed views of a
//! request's `tools`, `tool_choice` and `response_format`, of an assistant message's
//! `tool_calls`, and of the `delta.tool_calls` a stream adds.
//!
//! A request keeps these fields as [`RawJson`], the text it came with, so that an
//! OpenAI-compatible upstream gets them byte for byte (and so that the widget, which never sends
//! them, pays nothing to parse them). The views here are read where the relay checks them and
//! where a provider translates them into its own API's shapes.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A JSON value kept as the text it arrived as: passed on byte for byte, read into a typed
/// view only where one is needed.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson(Box<RawValue>);

impl RawJson {
    /// The value's JSON text, as it came.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The JSON text of `value`.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Self> {
        serde_json::value::to_raw_value(value).map(Self)
    }

    /// Reads the value as a `T`.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> serde_json::Result<T> {
        serde_json::from_str(self.0.get())
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for RawJson {}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

/// The only kind of tool (and of tool call) OpenAI's chat API has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ToolKind {
    #[default]
    Function,
}

/// One entry of a request's `tools`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: ToolKind,
    pub function: FunctionDefinition,
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionDefinition {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The arguments' JSON Schema (an object schema); absent: the function takes none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<RawJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

impl FunctionDefinition {
    /// Whether `name` is one OpenAI accepts (`^[a-zA-Z0-9_-]{1,64}$`), which every provider
    /// Confab translates for accepts too.
    pub fn valid_name(name: &str) -> bool {
        (1..=64).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }
}

/// A request's `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// `"none"`: the model answers in text.
    None,
    /// `"auto"`: the model decides.
    Auto,
    /// `"required"`: the model calls at least one tool.
    Required,
    /// `{"type": "function", "function": {"name": ...}}`: the model calls this one.
    Function(String),
}

/// What a `tool_choice` must look like, for error messages.
pub const TOOL_CHOICE_SHAPES: &str = "`\"none\"`, `\"auto\"`, `\"required\"` or \
`{\"type\": \"function\", \"function\": {\"name\": \"...\"}}`";

impl ToolChoice {
    /// Reads a `tool_choice`; `Err` says what is wrong with it.
    pub fn parse(raw: &RawJson) -> Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Shape {
            Mode(String),
            Named {
                #[serde(rename = "type")]
                kind: ToolKind,
                function: Named,
            },
        }
        #[derive(Deserialize)]
        struct Named {
            name: String,
        }
        let invalid = || format!("must be {TOOL_CHOICE_SHAPES}");
        match raw.parse::<Shape>().map_err(|_| invalid())? {
            Shape::Mode(mode) => match mode.as_str() {
                "none" => Ok(Self::None),
                "auto" => Ok(Self::Auto),
                "required" => Ok(Self::Required),
                _ => Err(invalid()),
            },
            Shape::Named { kind: ToolKind::Function, function } => {
                Ok(Self::Function(function.name))
            }
        }
    }
}

/// One call an assistant message made (`message.tool_calls[]`), in a conversation sent back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: ToolKind,
    pub function: FunctionCall,
}

/// The function a [`ToolCall`] called.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// The arguments as the model wrote them: JSON text (an object), which may not parse.
    pub arguments: String,
}

/// `delta.tool_calls[]` of a streamed chunk: the first for a call carries its `id`, `type` and
/// `function.name`; each one after it adds to `function.arguments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Which call of the answer it adds to (the client joins fragments by it).
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ToolKind>,
    pub function: FunctionCallDelta,
}

/// The part of a call's function a [`ToolCallDelta`] adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FunctionCallDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// A request's `response_format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseFormat {
    /// `{"type": "text"}`: the default, asking for nothing.
    Text,
    /// `{"type": "json_object"}`: any JSON object.
    JsonObject,
    /// `{"type": "json_schema", "json_schema": {...}}`: JSON that follows a schema.
    JsonSchema(JsonSchemaFormat),
}

/// `response_format.json_schema`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonSchemaFormat {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<RawJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

impl ResponseFormat {
    /// Reads a `response_format`; `Err` says what is wrong with it.
    pub fn parse(raw: &RawJson) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Shape {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            json_schema: Option<JsonSchemaFormat>,
        }
        let shape: Shape = raw.parse().map_err(|e| {
            format!(
                "must be an object with a `type` of `text`, `json_object` or `json_schema` ({e})"
            )
        })?;
        match (shape.kind.as_str(), shape.json_schema) {
            ("text", _) => Ok(Self::Text),
            ("json_object", _) => Ok(Self::JsonObject),
            ("json_schema", Some(format)) => {
                if !FunctionDefinition::valid_name(&format.name) {
                    return Err(
                        "`json_schema.name` must be 1 to 64 letters, digits, `_` or `-`".into()
                    );
                }
                if format.schema.as_ref().is_some_and(|s| !s.get().trim_start().starts_with('{')) {
                    return Err("`json_schema.schema` must be a JSON Schema object".into());
                }
                Ok(Self::JsonSchema(format))
            }
            ("json_schema", None) => Err("of type `json_schema` needs `json_schema`".into()),
            (other, _) => Err(format!(
                "has an unknown `type` `{}` (known: `text`, `json_object`, `json_schema`)",
                other.chars().take(40).collect::<String>()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawJson {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn raw_json_keeps_its_text_byte_for_byte() {
        let text = r#"[{"b": 1, "a":  2.50}]"#;
        let value = raw(text);
        assert_eq!(value.get(), text);
        assert_eq!(serde_json::to_string(&value).unwrap(), text);
    }

    #[test]
    fn tool_choices_are_read_in_each_shape() {
        assert_eq!(ToolChoice::parse(&raw(r#""auto""#)), Ok(ToolChoice::Auto));
        assert_eq!(ToolChoice::parse(&raw(r#""none""#)), Ok(ToolChoice::None));
        assert_eq!(ToolChoice::parse(&raw(r#""required""#)), Ok(ToolChoice::Required));
        assert_eq!(
            ToolChoice::parse(&raw(r#"{"type":"function","function":{"name":"f"}}"#)),
            Ok(ToolChoice::Function("f".into()))
        );
        for odd in [r#""any""#, r#"{"type":"tool","name":"f"}"#, "3", r#"{"type":"function"}"#] {
            assert!(ToolChoice::parse(&raw(odd)).is_err(), "{odd}");
        }
    }

    #[test]
    fn response_formats_are_read_and_odd_ones_explained() {
        assert_eq!(ResponseFormat::parse(&raw(r#"{"type":"text"}"#)), Ok(ResponseFormat::Text));
        assert_eq!(
            ResponseFormat::parse(&raw(r#"{"type":"json_object"}"#)),
            Ok(ResponseFormat::JsonObject)
        );
        let schema = r#"{"type":"json_schema","json_schema":{"name":"answer","schema":{"type":"object"},"strict":true}}"#;
        let ResponseFormat::JsonSchema(format) = ResponseFormat::parse(&raw(schema)).unwrap()
        else {
            panic!("not a schema");
        };
        assert_eq!((format.name.as_str(), format.strict), ("answer", Some(true)));
        assert_eq!(format.schema.unwrap().get(), r#"{"type":"object"}"#);
        let error = ResponseFormat::parse(&raw(r#"{"type":"yaml"}"#)).unwrap_err();
        assert!(error.contains("unknown `type` `yaml`"), "{error}");
        assert!(ResponseFormat::parse(&raw(r#"{"type":"json_schema"}"#)).is_err());
        assert!(ResponseFormat::parse(&raw(r#""json""#)).is_err());
    }

    #[test]
    fn function_names_follow_openai_rules() {
        assert!(FunctionDefinition::valid_name("get_weather-2"));
        for bad in ["", "has space", "dots.not", &"x".repeat(65)] {
            assert!(!FunctionDefinition::valid_name(bad), "{bad}");
        }
    }
}
