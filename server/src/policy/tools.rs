//! Function calling and structured output: who may ask for them, and whether what was asked
//! is well formed, so that a mistake is a 400 naming the parameter rather than an upstream's
//! failure (which a provider reports in its own words, never forwarded, as a 502).
//!
//! Only secret keys with the `tools` scope may use `tools`, `tool_choice`,
//! `parallel_tool_calls`, `response_format`, assistant messages with `tool_calls` and `tool`
//! messages. A site key is refused them whatever its site says: a public page must not be able
//! to make the model call functions in the operator's name, nor shape its answers into data.

use std::collections::HashSet;

use confab_protocol::{
    ChatMessage, ChatRequest, FunctionDefinition, RawJson, ResponseFormat, Role, Tool, ToolCall,
    ToolChoice,
};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// OpenAI's limit on a request's tools.
pub const MAX_TOOLS: usize = 128;

/// Whether a caller may ask for tools and structured output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolAccess {
    /// A site key (a public page): never (400 `tools_not_allowed`).
    Site,
    /// A secret key without the `tools` scope (403 `insufficient_scope`).
    NotGranted,
    /// A secret key with the `tools` scope.
    Granted,
}

/// Drops what asks for nothing (`response_format: {"type": "text"}`, the default, which some
/// clients always send), refuses the rest to callers that may not use it, and checks its shape.
pub fn check(access: ToolAccess, request: &mut ChatRequest) -> Result<(), ApiError> {
    if request
        .response_format
        .as_ref()
        .is_some_and(|raw| ResponseFormat::parse(raw) == Ok(ResponseFormat::Text))
    {
        request.response_format = None;
    }
    let Some(parameter) = request.tool_parameter() else {
        return Ok(());
    };
    match access {
        ToolAccess::Site => {
            return Err(ApiError::invalid(
                "tools_not_allowed",
                format!(
                    "`{parameter}` is not available with a site key: function calling and \
                     `response_format` are for server-side callers with a secret key that has \
                     the `tools` scope"
                ),
            ));
        }
        ToolAccess::NotGranted => {
            return Err(ApiError::PermissionDenied {
                code: "insufficient_scope",
                message: format!("this API key lacks the `tools` scope, which `{parameter}` needs")
                    .into(),
            });
        }
        ToolAccess::Granted => {}
    }
    let names = check_tools(request.tools.as_ref())?;
    if let Some(raw) = &request.tool_choice {
        let choice = ToolChoice::parse(raw).map_err(|problem| invalid("tool_choice", &problem))?;
        if names.is_empty() {
            return Err(invalid("tool_choice", "is only allowed when `tools` are given"));
        }
        if let ToolChoice::Function(name) = choice
            && !names.contains(name.as_str())
        {
            return Err(invalid("tool_choice", "names a function that `tools` does not define"));
        }
    }
    if request.parallel_tool_calls.is_some() && names.is_empty() {
        return Err(invalid("parallel_tool_calls", "is only allowed when `tools` are given"));
    }
    if let Some(raw) = &request.response_format {
        ResponseFormat::parse(raw).map_err(|problem| invalid("response_format", &problem))?;
    }
    check_messages(&request.messages)
}

/// The tools' names, checked: a non-empty array of at most [`MAX_TOOLS`] functions with valid,
/// distinct names and object schemas.
fn check_tools(raw: Option<&RawJson>) -> Result<HashSet<String>, ApiError> {
    let Some(raw) = raw else { return Ok(HashSet::new()) };
    let tools: Vec<Tool> = parse("tools", raw)?;
    if tools.is_empty() {
        return Err(invalid("tools", "must hold at least one tool"));
    }
    if tools.len() > MAX_TOOLS {
        return Err(invalid(
            "tools",
            &format!("holds {} tools; the limit is {MAX_TOOLS}", tools.len()),
        ));
    }
    let mut names = HashSet::with_capacity(tools.len());
    for (i, tool) in tools.into_iter().enumerate() {
        let function = tool.function;
        if !FunctionDefinition::valid_name(&function.name) {
            return Err(invalid(
                &format!("tools[{i}].function.name"),
                "must be 1 to 64 letters, digits, `_` or `-`",
            ));
        }
        if let Some(parameters) = &function.parameters
            && !parameters.get().trim_start().starts_with('{')
        {
            return Err(invalid(
                &format!("tools[{i}].function.parameters"),
                "must be a JSON Schema object",
            ));
        }
        if !names.insert(function.name) {
            return Err(invalid(
                &format!("tools[{i}].function.name"),
                "repeats an earlier tool's name",
            ));
        }
    }
    Ok(names)
}

/// Assistant messages' `tool_calls` are well formed, and every `tool` message answers a call
/// made earlier in the conversation (which providers that name calls by function, as Gemini
/// does, need to translate it).
fn check_messages(messages: &[ChatMessage]) -> Result<(), ApiError> {
    let mut calls = HashSet::new();
    for (i, message) in messages.iter().enumerate() {
        if let Some(raw) = &message.tool_calls {
            let parameter = format!("messages[{i}].tool_calls");
            if message.role != Role::Assistant {
                return Err(invalid(&parameter, "is only allowed on `assistant` messages"));
            }
            let made: Vec<ToolCall> = parse(&parameter, raw)?;
            for (j, call) in made.into_iter().enumerate() {
                if call.id.is_empty() {
                    return Err(invalid(&format!("{parameter}[{j}].id"), "must not be empty"));
                }
                calls.insert(call.id);
            }
        }
        match (message.role, &message.tool_call_id) {
            (Role::Tool, None) => {
                return Err(invalid(
                    &format!("messages[{i}]"),
                    "of role `tool` needs `tool_call_id`",
                ));
            }
            (Role::Tool, Some(id)) if !calls.contains(id) => {
                return Err(invalid(
                    &format!("messages[{i}].tool_call_id"),
                    "answers no call of an earlier assistant message",
                ));
            }
            (Role::Tool, Some(_)) | (_, None) => {}
            (_, Some(_)) => {
                return Err(invalid(
                    &format!("messages[{i}].tool_call_id"),
                    "is only allowed on `tool` messages",
                ));
            }
        }
    }
    Ok(())
}

/// Reads `raw` as a `T`, a shape error naming where it is (`tools[0].function`).
fn parse<T: DeserializeOwned>(parameter: &str, raw: &RawJson) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_str(raw.get());
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." { parameter.to_owned() } else { format!("{parameter}{path}") };
        let at = at.replace(".[", "[");
        // The position is within the parameter's own text, which the client cannot see.
        let inner = e.into_inner().to_string();
        let inner = inner.split(" at line ").next().unwrap_or_default();
        ApiError::invalid("invalid_field", format!("invalid `{at}`: {inner}"))
    })
}

fn invalid(parameter: &str, problem: &str) -> ApiError {
    ApiError::invalid("invalid_value", format!("`{parameter}` {problem}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request(extra: serde_json::Value) -> ChatRequest {
        let mut body = json!({"messages": [{"role": "user", "content": "hi"}]});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::from_value(body).unwrap()
    }

    fn message(error: ApiError) -> (String, String) {
        let envelope = error.envelope().error;
        (envelope.code, envelope.message)
    }

    fn weather() -> serde_json::Value {
        json!([{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
    }

    #[test]
    fn a_site_key_is_refused_every_tool_parameter_and_a_key_without_the_scope_too() {
        for extra in [
            json!({"tools": weather()}),
            json!({"tool_choice": "auto"}),
            json!({"parallel_tool_calls": false}),
            json!({"response_format": {"type": "json_object"}}),
        ] {
            let name = extra.as_object().unwrap().keys().next().unwrap().clone();
            let (code, text) =
                message(check(ToolAccess::Site, &mut request(extra.clone())).unwrap_err());
            assert_eq!(code, "tools_not_allowed");
            assert!(
                text.starts_with(&format!("`{name}` is not available with a site key")),
                "{text}"
            );
            let (code, text) =
                message(check(ToolAccess::NotGranted, &mut request(extra)).unwrap_err());
            assert_eq!(code, "insufficient_scope");
            assert_eq!(text, format!("this API key lacks the `tools` scope, which `{name}` needs"));
        }
    }

    #[test]
    fn a_text_response_format_asks_for_nothing_and_is_dropped() {
        let mut asked = request(json!({"response_format": {"type": "text"}}));
        check(ToolAccess::Site, &mut asked).unwrap();
        assert_eq!(asked.response_format, None);
    }

    #[test]
    fn malformed_tools_are_refused_naming_the_parameter() {
        let cases = [
            (json!({"tools": {}}), "invalid `tools`: invalid type: map, expected a sequence"),
            (json!({"tools": []}), "`tools` must hold at least one tool"),
            (
                json!({"tools": [{"type": "function", "function": {"description": "x"}}]}),
                "invalid `tools[0].function`: missing field `name`",
            ),
            (
                json!({"tools": [{"type": "retrieval", "function": {"name": "f"}}]}),
                "invalid `tools[0].type`: unknown variant `retrieval`, expected `function`",
            ),
            (
                json!({"tools": [{"type": "function", "function": {"name": "get weather"}}]}),
                "`tools[0].function.name` must be 1 to 64 letters, digits, `_` or `-`",
            ),
            (
                json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]}),
                "`tools[0].function.parameters` must be a JSON Schema object",
            ),
            (
                json!({"tools": [{"type": "function", "function": {"name": "f"}},
                                 {"type": "function", "function": {"name": "f"}}]}),
                "`tools[1].function.name` repeats an earlier tool's name",
            ),
            (
                json!({"tool_choice": "auto"}),
                "`tool_choice` is only allowed when `tools` are given",
            ),
            (
                json!({"tools": weather(), "tool_choice": {"type": "function", "function": {"name": "other"}}}),
                "`tool_choice` names a function that `tools` does not define",
            ),
            (
                json!({"tools": weather(), "tool_choice": "any"}),
                "`tool_choice` must be `\"none\"`, `\"auto\"`, `\"required\"` or `{\"type\": \"function\", \"function\": {\"name\": \"...\"}}`",
            ),
            (
                json!({"response_format": {"type": "json_schema"}}),
                "`response_format` of type `json_schema` needs `json_schema`",
            ),
        ];
        for (extra, expected) in cases {
            let (_, text) =
                message(check(ToolAccess::Granted, &mut request(extra.clone())).unwrap_err());
            assert_eq!(text, expected, "{extra}");
        }
        let mut fine = request(json!({"tools": weather(), "tool_choice": "required",
            "parallel_tool_calls": false, "response_format": {"type": "json_object"}}));
        check(ToolAccess::Granted, &mut fine).unwrap();
    }

    #[test]
    fn tool_messages_must_answer_an_earlier_call() {
        let call = json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]});
        let conversation = |messages: serde_json::Value| {
            serde_json::from_value::<ChatRequest>(json!({"messages": messages, "tools": weather()}))
                .unwrap()
        };
        let user = json!({"role": "user", "content": "weather?"});
        let mut good = conversation(json!([user, call,
            {"role": "tool", "content": "22 C", "tool_call_id": "call_1"}]));
        check(ToolAccess::Granted, &mut good).unwrap();
        for (messages, expected) in [
            (
                json!([user, {"role": "tool", "content": "22 C", "tool_call_id": "call_9"}]),
                "`messages[1].tool_call_id` answers no call of an earlier assistant message",
            ),
            (
                json!([user, call, {"role": "tool", "content": "22 C"}]),
                "`messages[2]` of role `tool` needs `tool_call_id`",
            ),
            (
                json!([user, {"role": "assistant", "content": "", "tool_calls": [{"id": "c"}]}]),
                "invalid `messages[1].tool_calls[0]`: missing field `type`",
            ),
            (
                json!([{"role": "user", "content": "x", "tool_calls": []}]),
                "`messages[0].tool_calls` is only allowed on `assistant` messages",
            ),
        ] {
            let (_, text) =
                message(check(ToolAccess::Granted, &mut conversation(messages)).unwrap_err());
            assert_eq!(text, expected);
        }
    }
}
