//! The HTML reader: a page's main content as sections under its h1–h6 headings.
//!
//! Only html5ever's tokenizer is used, not its tree builder: the tokenizer is linear in the
//! input, while building a tree costs time proportional to the depth for some tags (scope
//! checks walk the stack of open elements), memory for every node, and a recursive walk or
//! drop for a deep tree. Instead this module keeps its own stack of open element names with
//! the few repairs real pages need (an unclosed `<p>` or `<li>` closes at the next one), and
//! refuses a page nested deeper than [`Limits::max_html_depth`] or with more than
//! [`Limits::max_html_elements`] elements. The page is fed in chunks, so a refusal stops the
//! work where the limit was crossed.
//!
//! Main content is the text inside `<main>` and `<article>` if there is any, else everything
//! outside the elements that are never content (navigation, headers and footers, scripts,
//! forms...). The title is `<title>`, else the first `<h1>`, else the file name.

use std::cell::RefCell;

use html5ever::LocalName;
use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{
    BufferQueue, Tag, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
};

use crate::document::{SectionBuilder, collapse_whitespace, title_from_name};
use crate::{Document, Format, IngestError, Limits};

/// Elements whose content is never the page's content.
const SKIPPED: &[&str] = &[
    "head", "nav", "header", "footer", "aside", "script", "style", "noscript", "template", "form",
    "svg", "iframe", "button", "select", "object", "canvas", "math", "dialog",
];

/// Elements that end a paragraph where they start and end.
const BLOCKS: &[&str] = &[
    "address",
    "article",
    "blockquote",
    "body",
    "caption",
    "dd",
    "details",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "hr",
    "li",
    "main",
    "ol",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "tbody",
    "thead",
    "tfoot",
    "tr",
    "ul",
];

/// Elements that never have content or an end tag.
const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr", "keygen",
];

/// Elements closed by the start of another of the same name while one is the current element.
const SELF_CLOSING_SIBLINGS: &[&str] = &["p", "li", "dt", "dd", "tr", "td", "th", "option"];

/// Bytes fed to the tokenizer at a time: a refusal is noticed within one chunk.
const CHUNK_BYTES: usize = 64 * 1024;

pub(crate) fn parse(name: &str, source: &str, limits: &Limits) -> Result<Document, IngestError> {
    let sink = Sink { state: RefCell::new(State::new(limits)) };
    let tokenizer = Tokenizer::new(sink, TokenizerOpts::default());
    let queue = BufferQueue::default();
    let mut rest = source;
    while !rest.is_empty() {
        let mut end = rest.len().min(CHUNK_BYTES);
        while !rest.is_char_boundary(end) {
            end += 1;
        }
        let (chunk, after) = rest.split_at(end);
        rest = after;
        queue.push_back(StrTendril::from_slice(chunk));
        // The sink never asks for a script to run, so `feed` returns only once the queue is
        // empty.
        let _ = tokenizer.feed(&queue);
        if tokenizer.sink.state.borrow().refusal.is_some() {
            break;
        }
    }
    tokenizer.end();
    let state = tokenizer.sink.state.into_inner();
    if let Some(reason) = state.refusal {
        return Err(IngestError::Malformed { name: name.to_owned(), format: Format::Html, reason });
    }
    let State { title, first_h1, mut main, mut body, paragraph_main, paragraph_body, .. } = state;
    main.paragraph(&collapse_whitespace(&paragraph_main));
    body.paragraph(&collapse_whitespace(&paragraph_body));
    let sections = if main.has_text() { main.finish() } else { body.finish() };
    let title = title
        .map(|title| collapse_whitespace(&title))
        .filter(|title| !title.is_empty())
        .or(first_h1)
        .unwrap_or_else(|| title_from_name(name));
    Ok(Document { name: name.to_owned(), title, sections })
}

#[derive(Debug)]
struct Sink {
    state: RefCell<State>,
}

#[derive(Debug)]
struct State {
    max_depth: usize,
    max_elements: usize,
    elements: usize,
    /// Names of the open elements, outermost first (interned atoms: pushing one allocates
    /// nothing for a known tag name).
    open: Vec<LocalName>,
    /// How many open elements are in [`SKIPPED`], in `<main>`/`<article>`, in `<pre>`.
    skipped: usize,
    in_main: usize,
    in_pre: usize,
    /// The `<title>` text while in it (`Some` from its start).
    title: Option<String>,
    in_title: bool,
    first_h1: Option<String>,
    /// The heading being read: its level and text.
    heading: Option<(u8, String)>,
    main: SectionBuilder,
    body: SectionBuilder,
    paragraph_main: String,
    paragraph_body: String,
    refusal: Option<String>,
}

impl State {
    fn new(limits: &Limits) -> Self {
        Self {
            max_depth: limits.max_html_depth,
            max_elements: limits.max_html_elements,
            elements: 0,
            open: Vec::new(),
            skipped: 0,
            in_main: 0,
            in_pre: 0,
            title: None,
            in_title: false,
            first_h1: None,
            heading: None,
            main: SectionBuilder::default(),
            body: SectionBuilder::default(),
            paragraph_main: String::new(),
            paragraph_body: String::new(),
            refusal: None,
        }
    }

    fn end_paragraph(&mut self) {
        let text = std::mem::take(&mut self.paragraph_body);
        self.body.paragraph(&paragraph_text(&text));
        let text = std::mem::take(&mut self.paragraph_main);
        self.main.paragraph(&paragraph_text(&text));
    }

    fn text(&mut self, text: &str) {
        if self.in_title {
            self.title.get_or_insert_default().push_str(text);
            return;
        }
        if self.skipped > 0 {
            return;
        }
        if let Some((_, heading)) = &mut self.heading {
            heading.push_str(text);
            return;
        }
        let text = if self.in_pre > 0 { text.to_owned() } else { text.replace('\n', " ") };
        self.paragraph_body.push_str(&text);
        if self.in_main > 0 {
            self.paragraph_main.push_str(&text);
        }
    }

    fn start(&mut self, tag: &Tag) -> TokenSinkResult<()> {
        let name: &str = &tag.name;
        self.elements += 1;
        if self.elements > self.max_elements {
            self.refusal = Some(format!("more than {} elements", self.max_elements));
            return TokenSinkResult::Continue;
        }
        if name == "body" {
            self.close("head");
        }
        if SELF_CLOSING_SIBLINGS.contains(&name)
            && self.open.last().is_some_and(|open| open == name)
        {
            self.pop();
        }
        if BLOCKS.contains(&name) && self.open.last().is_some_and(|open| open == "p") {
            self.pop();
        }
        if BLOCKS.contains(&name) || heading_level(name).is_some() {
            self.end_paragraph();
        }
        match name {
            "br" => self.text(if self.in_pre > 0 { "\n" } else { " " }),
            "td" | "th" => self.text(" "),
            _ => {}
        }
        if VOID.contains(&name) {
            return TokenSinkResult::Continue;
        }
        if self.open.len() >= self.max_depth {
            self.refusal = Some(format!("elements nested more than {} deep", self.max_depth));
            return TokenSinkResult::Continue;
        }
        self.open.push(tag.name.clone());
        self.entered(name);
        match name {
            "script" => TokenSinkResult::RawData(RawKind::ScriptData),
            "style" | "noscript" | "iframe" | "xmp" | "noembed" | "noframes" => {
                TokenSinkResult::RawData(RawKind::Rawtext)
            }
            "title" | "textarea" => TokenSinkResult::RawData(RawKind::Rcdata),
            "plaintext" => TokenSinkResult::Plaintext,
            _ => TokenSinkResult::Continue,
        }
    }

    fn entered(&mut self, name: &str) {
        if SKIPPED.contains(&name) {
            self.skipped += 1;
        }
        match name {
            "main" | "article" => self.in_main += 1,
            "pre" => self.in_pre += 1,
            // An SVG's `<title>` names a drawing, not the page.
            "title" if self.title.is_none() && !self.open.iter().any(|open| open == "svg") => {
                self.in_title = true;
                self.title = Some(String::new());
            }
            _ => {}
        }
        if let Some(level) = heading_level(name)
            && self.skipped == 0
        {
            self.heading = Some((level, String::new()));
        }
    }

    fn end(&mut self, tag: &Tag) {
        let name: &str = &tag.name;
        if BLOCKS.contains(&name) {
            self.end_paragraph();
        }
        self.close(name);
    }

    /// Close the innermost open `name` and everything inside it; nothing if none is open.
    fn close(&mut self, name: &str) {
        if let Some(at) = self.open.iter().rposition(|open| open == name) {
            while self.open.len() > at {
                self.pop();
            }
        }
    }

    fn pop(&mut self) {
        let Some(name) = self.open.pop() else { return };
        if SKIPPED.contains(&&*name) {
            self.skipped -= 1;
        }
        match &*name {
            "main" | "article" => {
                self.end_paragraph();
                self.in_main -= 1;
            }
            "pre" => self.in_pre -= 1,
            "title" => self.in_title = false,
            _ => {}
        }
        if let Some(level) = heading_level(&name)
            && let Some((open, text)) = self.heading.take()
        {
            if open != level {
                self.heading = Some((open, text));
                return;
            }
            let text = collapse_whitespace(&text);
            if level == 1 && self.first_h1.is_none() && !text.is_empty() {
                self.first_h1 = Some(text.clone());
            }
            self.body.heading(level, &text);
            if self.in_main > 0 {
                self.main.heading(level, &text);
            }
        }
    }
}

/// A paragraph's text: whitespace collapsed, except inside `<pre>`, whose lines are kept.
fn paragraph_text(text: &str) -> String {
    if text.contains('\n') {
        text.lines().map(str::trim_end).collect::<Vec<_>>().join("\n")
    } else {
        collapse_whitespace(text)
    }
}

fn heading_level(name: &str) -> Option<u8> {
    match name {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}

impl TokenSink for Sink {
    type Handle = ();

    fn process_token(&self, token: Token, _line_number: u64) -> TokenSinkResult<()> {
        let mut state = self.state.borrow_mut();
        if state.refusal.is_some() {
            return TokenSinkResult::Continue;
        }
        match token {
            Token::TagToken(tag) => match tag.kind {
                TagKind::StartTag => return state.start(&tag),
                TagKind::EndTag => state.end(&tag),
            },
            Token::CharacterTokens(text) => state.text(&text),
            _ => {}
        }
        TokenSinkResult::Continue
    }
}
