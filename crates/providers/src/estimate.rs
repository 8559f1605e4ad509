//! Token counts the relay works out for itself: a prompt's ceiling (what a reservation holds)
//! and estimates for answers whose usage the upstream did not report. A leaf: the metering, the
//! relay and the demo upstream all use it, and it uses none of them.

use confab_protocol::ChatRequest;

/// Rough token count for text whose usage the upstream did not report: about four bytes per
/// token for English text, which is what tokenizers of the GPT family average.
pub fn estimate_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

/// Bytes of message text in a request (what a usage estimate counts for the prompt).
pub fn prompt_bytes(request: &ChatRequest) -> usize {
    request.messages.iter().map(|m| m.content.len()).sum()
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
