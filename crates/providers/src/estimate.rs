//! Token counts the relay works out for itself: a prompt's ceiling (what a reservation holds)
//! and estimates for answers whose usage the upstream did not report. A leaf: the metering, the
//! relay and the demo upstream all use it, and it uses none of them.

use confab_protocol::ChatRequest;

/// Rough token count for text whose usage the upstream did not report: about four bytes per
/// token for English text, which is what tokenizers of the GPT family average.
pub fn estimate_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

/// Bytes of a request's prompt (what a usage estimate counts for it): its messages' text and
/// tool calls, and the tool definitions, tool choice and response format, which providers bill
/// as prompt tokens too (they are rendered into the model's prompt).
pub fn prompt_bytes(request: &ChatRequest) -> usize {
    let messages: usize = request.messages.iter().map(|m| m.prompt_bytes()).sum();
    let extras = [&request.tools, &request.tool_choice, &request.response_format]
        .into_iter()
        .flatten()
        .map(|raw| raw.get().len())
        .sum::<usize>();
    messages + extras
}

/// An upper bound of a prompt's tokens, for budget reservations: tokenizers of the BPE family
/// never make more tokens than bytes, and chat formats add a few tokens per message.
pub fn prompt_token_ceiling(prompt_bytes: usize, messages: usize) -> u64 {
    let bytes = u64::try_from(prompt_bytes).unwrap_or(u64::MAX);
    let messages = u64::try_from(messages).unwrap_or(u64::MAX);
    bytes.saturating_add(messages.saturating_mul(4)).saturating_add(3)
}

/// An answer's tokens when the upstream reported none: the larger of one per four bytes (what
/// GPT-family tokenizers average on English) and one per content chunk (upstreams send about a
/// token per chunk, which is what keeps CJK text and emoji, at one to three tokens per
/// character, from being under-counted two or three times by the byte rule).
pub fn estimate_answer_tokens(text_bytes: usize, content_chunks: u64) -> u64 {
    u64::try_from(text_bytes).unwrap_or(u64::MAX).div_ceil(4).max(content_chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_counts_tools_calls_and_the_response_format() {
        let request: ChatRequest = serde_json::from_str(
            r#"{"messages":[{"role":"user","content":"abcd"},
                {"role":"assistant","content":null,"tool_calls":[1]},
                {"role":"tool","content":"ef","tool_call_id":"x"}],
               "tools":[2,3],"tool_choice":"auto","response_format":{}}"#,
        )
        .unwrap();
        // Text 4 + 2, calls `[1]` 3, tools `[2,3]` 5, choice `"auto"` 6, format `{}` 2.
        assert_eq!(prompt_bytes(&request), 22);
    }
}
