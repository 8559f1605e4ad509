//! What retrieval adds to a request, and what the answer's stream says about it.
//!
//! - [`Sources::build`] turns the passages found for a question into the system block the
//!   upstream receives: an instruction (by the site's [`Grounding`]) and the passages under
//!   numbered sources, one number per document, within a byte budget.
//! - [`Citations`] follows the answer as it streams, notes which numbers it cites (`[1]`,
//!   `[2, 3]`), and makes the chunk that tells the client which sources were used: a
//!   `chat.completion.chunk` with no choices (so OpenAI clients skip it, as they skip the usage
//!   chunk) and an extra `confab.sources` field:
//!
//! ```json
//! {"id":"…","object":"chat.completion.chunk","created":1,"model":"…","choices":[],
//!  "confab":{"sources":[{"n":1,"title":"Returns","url":"https://shop.example/returns"}]}}
//! ```
//!
//! It comes once the answer's text is complete: just before the upstream's usage chunk (which
//! stays the last before `[DONE]`), or at the end when the upstream sends none. The sources
//! listed are those the answer cites, or every source it was given when it cites none. Only
//! streamed answers carry it; a whole (non-streamed) answer is passed on as the upstream wrote
//! it. A source read from a file has no `url`: the file's path on the operator's machine is
//! never shown to visitors.

use confab_store::knowledge::Passage;
use serde::Serialize;

use crate::store::Grounding;

/// Bytes of a passage's text at most in the block (passages are at most 1,200 characters; this
/// bounds a stored one that is not).
const MAX_PASSAGE_BYTES: usize = 4_800;

/// One source as the client is told of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    /// Its number in the block, from 1.
    pub n: u32,
    pub title: String,
    /// The page it came from; `None` for a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// The system block for one request, and its sources.
#[derive(Debug, Clone)]
pub struct Sources {
    pub block: String,
    pub sources: Vec<Source>,
}

impl Sources {
    /// The block for `passages` (best first), at most `max_bytes` long: passages are taken in
    /// rank order while they fit; sources are numbered in the order their first passage was
    /// taken. With no passage (none found, or none fits), a `strict` site still gets its
    /// instruction, so that the model says the documents do not cover the question; a `prefer`
    /// site gets nothing (`None`).
    pub fn build(
        passages: &[Passage],
        grounding: Grounding,
        handoff: bool,
        max_bytes: usize,
    ) -> Option<Self> {
        let instruction = instruction(grounding, handoff);
        let mut used = instruction.len();
        // (document id, source, its header and passages as the block shows them)
        let mut documents: Vec<(i64, Source, String)> = Vec::new();
        for passage in passages {
            let text = excerpt(&passage.text, MAX_PASSAGE_BYTES);
            let piece = format!("{}{text}\n", location(passage));
            // The document's place in the block, or the source and header it would start.
            let slot = match documents.iter().position(|(id, ..)| *id == passage.document_id) {
                Some(i) => Ok(i),
                None => {
                    let n = documents.len() as u32 + 1;
                    let source =
                        Source { n, title: title_of(passage), url: page_url(&passage.source) };
                    let header = header(&source);
                    Err((source, header))
                }
            };
            let size = piece.len() + slot.as_ref().err().map_or(0, |(_, header)| header.len());
            if used + size > max_bytes {
                continue;
            }
            used += size;
            match slot {
                Ok(i) => documents[i].2.push_str(&piece),
                Err((source, header)) => {
                    documents.push((passage.document_id, source, header + &piece));
                }
            }
        }
        if documents.is_empty() && grounding == Grounding::Prefer {
            return None;
        }
        let mut block = String::with_capacity(used);
        block.push_str(instruction);
        if documents.is_empty() {
            block.push_str("\n\n(No source matches this question.)");
        }
        for (_, _, shown) in &documents {
            block.push_str(shown);
        }
        let sources = documents.into_iter().map(|(_, source, _)| source).collect();
        Some(Self { block, sources })
    }
}

fn instruction(grounding: Grounding, handoff: bool) -> &'static str {
    match (grounding, handoff) {
        (Grounding::Prefer, _) => {
            "Sources from the website's own documents follow. Base your answer on them where \
             they cover the question, and cite each source you use by its number in square \
             brackets, like [1]. Where they do not cover it, say so before answering from \
             general knowledge."
        }
        (Grounding::Strict, false) => {
            "Sources from the website's own documents follow. Answer only from them, and cite \
             each source you use by its number in square brackets, like [1]. If they do not \
             cover the question, say that the website's documents do not answer it; do not \
             answer from general knowledge or guess."
        }
        (Grounding::Strict, true) => {
            "Sources from the website's own documents follow. Answer only from them, and cite \
             each source you use by its number in square brackets, like [1]. If they do not \
             cover the question, say that the website's documents do not answer it, and offer \
             to put the visitor in touch with a person (the \"Talk to a person\" button); do not \
             answer from general knowledge or guess."
        }
    }
}

/// The document's title, or its source's last part when it has none.
fn title_of(passage: &Passage) -> String {
    let title = passage.title.trim();
    if !title.is_empty() {
        return title.to_owned();
    }
    let source = passage.source.trim_end_matches('/');
    source.rsplit(['/', '\\']).next().unwrap_or(source).to_owned()
}

/// An http(s) source is a page visitors may open; anything else (a file) is not shown.
fn page_url(source: &str) -> Option<String> {
    let url = url::Url::parse(source).ok()?;
    matches!(url.scheme(), "http" | "https").then(|| url.to_string())
}

/// A source's header in the block, after the blank line that separates sources:
/// `[1] Returns (https://shop.example/returns)`.
fn header(source: &Source) -> String {
    match &source.url {
        Some(url) => format!("\n\n[{}] {} ({url})\n", source.n, source.title),
        None => format!("\n\n[{}] {}\n", source.n, source.title),
    }
}

/// Where in its document a passage sits (`Returns > Refunds: `), or nothing at the top.
fn location(passage: &Passage) -> String {
    if passage.heading_path.is_empty() {
        String::new()
    } else {
        format!("{}: ", passage.heading_path.join(" > "))
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn excerpt(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The sources of a streamed answer, and which of them it cited so far.
#[derive(Debug, Clone)]
pub struct Citations {
    sources: Vec<Source>,
    /// Bit `n` set: the answer cited source `n`.
    cited: u64,
    /// The end of the text so far when it may be the start of a marker (`[1`, `[2, `).
    pending: String,
}

/// A marker is short: `[12, 13, 14]` at most, in practice.
const MAX_MARKER_BYTES: usize = 16;

impl Citations {
    pub fn new(sources: Vec<Source>) -> Self {
        Self { sources, cited: 0, pending: String::new() }
    }

    /// Reads the next piece of the answer's text.
    pub fn read(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        let mut joined = std::mem::take(&mut self.pending);
        joined.push_str(text);
        let mut rest = joined.as_str();
        while let Some(open) = rest.find('[') {
            let after = &rest[open + 1..];
            match after.find(|c: char| !(c.is_ascii_digit() || c == ',' || c == ' ')) {
                Some(end) if after.as_bytes()[end] == b']' => {
                    for number in after[..end].split(',') {
                        if let Ok(n) = number.trim().parse::<u32>()
                            && (1..64).contains(&n)
                        {
                            self.cited |= 1 << n;
                        }
                    }
                    rest = &after[end + 1..];
                }
                Some(_) => rest = after,
                // The text ends inside what may be a marker: keep it for the next piece.
                None => {
                    if rest.len() - open <= MAX_MARKER_BYTES {
                        self.pending = rest[open..].to_owned();
                    }
                    return;
                }
            }
        }
    }

    /// The sources to name: those cited, or all when none was.
    pub fn used(&self) -> Vec<&Source> {
        let cited: Vec<&Source> =
            self.sources.iter().filter(|s| s.n < 64 && self.cited & (1 << s.n) != 0).collect();
        if cited.is_empty() { self.sources.iter().collect() } else { cited }
    }

    /// The chunk that names the sources used (see the module comment); `None` when the
    /// answer had no sources.
    pub fn chunk(&self, id: &str, created: u64, model: &str) -> Option<String> {
        if self.sources.is_empty() {
            return None;
        }
        let chunk = serde_json::json!({
            "id": id,
            "object": confab_protocol::CHUNK_OBJECT,
            "created": created,
            "model": model,
            "choices": [],
            "confab": { "sources": self.used() },
        });
        serde_json::to_string(&chunk).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(id: i64, document_id: i64, source: &str, title: &str, text: &str) -> Passage {
        Passage {
            id,
            document_id,
            site_id: "s".into(),
            ordinal: 0,
            heading_path: vec!["Returns".into(), "Refunds".into()],
            text: text.into(),
            source: source.into(),
            title: title.into(),
        }
    }

    #[test]
    fn sources_are_numbered_per_document_in_rank_order_and_files_have_no_url() {
        let passages = [
            passage(1, 10, "https://shop.example/returns", "Returns", "Refunds take 5 days."),
            passage(2, 20, "/home/op/docs/shipping.md", "Shipping", "We ship in 2 days."),
            passage(3, 10, "https://shop.example/returns", "Returns", "Keep the receipt."),
        ];
        let sources = Sources::build(&passages, Grounding::Prefer, false, 10_000).unwrap();
        assert_eq!(
            sources.sources,
            vec![
                Source {
                    n: 1,
                    title: "Returns".into(),
                    url: Some("https://shop.example/returns".into())
                },
                Source { n: 2, title: "Shipping".into(), url: None },
            ]
        );
        let block = &sources.block;
        assert!(block.contains("[1] Returns (https://shop.example/returns)\n"), "{block}");
        assert!(block.contains("Returns > Refunds: Refunds take 5 days.\n"), "{block}");
        assert!(block.contains("Returns > Refunds: Keep the receipt.\n"), "{block}");
        assert!(block.contains("[2] Shipping\n"), "{block}");
        assert!(!block.contains("/home/op"), "a file's path is not shown: {block}");
        assert!(block.find("Keep the receipt").unwrap() < block.find("[2] Shipping").unwrap());
    }

    #[test]
    fn the_block_stays_within_its_budget_by_leaving_out_what_does_not_fit() {
        let long = "x".repeat(3_000);
        let passages = [
            passage(1, 10, "https://shop.example/a", "A", &long),
            passage(2, 20, "https://shop.example/b", "B", "short"),
        ];
        let sources = Sources::build(&passages, Grounding::Prefer, false, 1_000).unwrap();
        assert!(sources.block.len() <= 1_000, "{}", sources.block.len());
        assert_eq!(sources.sources.len(), 1);
        assert_eq!(sources.sources[0].title, "B");
        assert_eq!(sources.sources[0].n, 1);
    }

    #[test]
    fn with_nothing_found_prefer_adds_nothing_and_strict_still_instructs() {
        assert!(Sources::build(&[], Grounding::Prefer, true, 10_000).is_none());
        let strict = Sources::build(&[], Grounding::Strict, true, 10_000).unwrap();
        assert!(strict.block.contains("Answer only from them"), "{}", strict.block);
        assert!(strict.block.contains("Talk to a person"), "{}", strict.block);
        assert!(strict.sources.is_empty());
        let no_handoff = Sources::build(&[], Grounding::Strict, false, 10_000).unwrap();
        assert!(!no_handoff.block.contains("person"), "{}", no_handoff.block);
    }

    fn three() -> Vec<Source> {
        (1..=3).map(|n| Source { n, title: format!("T{n}"), url: None }).collect()
    }

    #[test]
    fn citations_are_found_across_chunk_boundaries_and_in_lists() {
        let mut citations = Citations::new(three());
        for piece in ["Refunds take 5 days [", "3", "]. Also see [1", ", 3]", " and [x] [99]."] {
            citations.read(piece);
        }
        let used: Vec<u32> = citations.used().iter().map(|s| s.n).collect();
        assert_eq!(used, vec![1, 3]);
    }

    #[test]
    fn an_answer_that_cites_nothing_names_every_source_and_none_without_sources() {
        let mut citations = Citations::new(three());
        citations.read("No markers here [see below].");
        assert_eq!(citations.used().len(), 3);
        let chunk = citations.chunk("c1", 7, "m").unwrap();
        let value: serde_json::Value = serde_json::from_str(&chunk).unwrap();
        assert_eq!(value["choices"], serde_json::json!([]));
        assert_eq!(value["object"], "chat.completion.chunk");
        assert_eq!(value["confab"]["sources"][2]["title"], "T3");
        assert!(value["confab"]["sources"][0].get("url").is_none());
        assert!(Citations::new(Vec::new()).chunk("c", 1, "m").is_none());
    }
}
