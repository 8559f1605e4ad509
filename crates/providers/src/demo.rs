//! The built-in demo upstream: no network, no key. It streams a short, clearly labelled answer
//! word by word with realistic pacing and reports usage like a real upstream, so a new user sees
//! the whole path work before configuring a provider.

use std::collections::VecDeque;
use std::time::Duration;

use confab_protocol::{
    CHUNK_OBJECT, ChatCompletionChunk, ChatRequest, ChunkChoice, Delta, Role, Usage,
};
use futures_util::stream;

use async_trait::async_trait;

use crate::estimate::{estimate_tokens, prompt_bytes};
use crate::{Call, EventStream, Provider, UpstreamError, UpstreamEvent};

#[derive(Debug, Clone)]
pub struct DemoProvider {
    token_delay: Duration,
}

#[async_trait]
impl Provider for DemoProvider {
    fn name(&self) -> &str {
        "demo"
    }

    async fn open(
        &self,
        request: &ChatRequest,
        call: Call<'_>,
    ) -> Result<EventStream, UpstreamError> {
        call.mark_sent();
        Ok(self.stream(request))
    }
}

impl DemoProvider {
    pub fn new(token_delay: Duration) -> Self {
        Self { token_delay }
    }

    fn stream(&self, request: &ChatRequest) -> EventStream {
        let model = request.model.clone().unwrap_or_default();
        let question = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
            .unwrap_or_default();
        let answer = answer_for(question);
        let max_tokens = request.max_tokens.unwrap_or(u32::MAX) as usize;
        let mut words: Vec<String> = split_keeping_spaces(&answer);
        let finish_reason = if words.len() > max_tokens {
            words.truncate(max_tokens);
            "length"
        } else {
            "stop"
        };
        let usage = Usage::new(estimate_tokens(prompt_bytes(request)), words.len() as u64);

        let created = crate::unix_now();
        let id = format!("chatcmpl-demo-{created:x}{:08x}", rand::random::<u32>());
        let chunk = |delta: Delta, finish: Option<&str>, usage: Option<Usage>| {
            let chunk = ChatCompletionChunk {
                id: id.clone(),
                object: CHUNK_OBJECT.into(),
                created,
                model: model.clone(),
                choices: if usage.is_some() {
                    Vec::new()
                } else {
                    vec![ChunkChoice { index: 0, delta, finish_reason: finish.map(Into::into) }]
                },
                usage,
            };
            UpstreamEvent::Data(serde_json::to_string(&chunk).unwrap_or_default())
        };

        let mut events = VecDeque::with_capacity(words.len() + 4);
        events.push_back(chunk(
            Delta { role: Some(Role::Assistant), content: Some(String::new()), tool_calls: None },
            None,
            None,
        ));
        for word in words {
            events.push_back(chunk(Delta { content: Some(word), ..Delta::default() }, None, None));
        }
        events.push_back(chunk(Delta::default(), Some(finish_reason), None));
        if request.stream_options.is_some_and(|o| o.include_usage) {
            events.push_back(chunk(Delta::default(), None, Some(usage)));
        }
        events.push_back(UpstreamEvent::Done);

        let delay = self.token_delay;
        Box::pin(stream::unfold((events, true), move |(mut events, first)| async move {
            let event = events.pop_front()?;
            if !first && !delay.is_zero() && matches!(event, UpstreamEvent::Data(_)) {
                tokio::time::sleep(delay).await;
            }
            Some((Ok(event), (events, false)))
        }))
    }
}

fn answer_for(question: &str) -> String {
    let question: String = question.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut shown: String = question.chars().take(160).collect();
    if shown.len() < question.len() {
        shown.push('…');
    }
    format!(
        "This answer comes from Confab's built-in **demo upstream**, not from a language model. \
         You asked: “{shown}”. Everything else you see is real: your site key, the origin check, \
         the site's policy and this token-by-token stream. To get real answers, add an \
         OpenAI-compatible provider under `[[upstreams]]` in `confab.toml` and restart the relay."
    )
}

/// Splits text into words, each keeping the space before it, so that joining them gives the text.
fn split_keeping_spaces(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if c == ' ' && !current.trim().is_empty() {
            words.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_join_back_into_the_answer() {
        let answer = answer_for("What is  Confab?");
        assert_eq!(split_keeping_spaces(&answer).concat(), answer);
        assert!(answer.contains("You asked: “What is Confab?”"));
    }
}
