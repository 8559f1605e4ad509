//! Markdown for the model's answers, turned straight into DOM nodes.
//!
//! Hand-written for size: a markdown crate would add tens of kilobytes to a script every visitor
//! downloads, for features a chat answer does not use. The subset: paragraphs (a single newline is
//! a line break), `-`/`*`/`+` and `1.`/`1)` lists nested by indentation (up to three levels),
//! `#` headings (shown as a bold line, as real headings look wrong in a chat bubble), `>` quotes
//! (nested quotes are flattened), fenced code blocks with an optional language, `*em*`/`_em_`,
//! `**strong**`/`__strong__`, `` `code` ``, `[text](url)`, bare `http(s)://` links and backslash
//! escapes. Anything else (tables, HTML, images, rules) is shown as the text it is.
//!
//! Answers are re-rendered on every streamed token, so every prefix of a document must parse: an
//! unclosed fence runs to the end of the text, and an unclosed `**` or `[text](ur` stays literal
//! text until it closes. Nesting is capped so that hostile input cannot exhaust the stack.
//!
//! **Security invariant:** the model's text never becomes markup. [`render_into`] builds nodes
//! with `createElement` and text nodes, never through an HTML parser, and sets no attributes but
//! `href`, `rel` and `target` on `<a>`, `class` on `<code>` and `start` on `<ol>`. A link is made
//! only if [`safe_href`] accepts its URL; otherwise its text is shown without a link.

use wasm_bindgen::JsValue;
use web_sys::{Document, Element};

/// How deep lists may nest (0 is a top-level list); deeper items join the deepest list.
const MAX_LIST_DEPTH: usize = 2;
/// How deep emphasis and links may nest; deeper delimiters stay literal text.
const MAX_INLINE_DEPTH: u8 = 8;

/// A block of an answer. A heading is a paragraph holding one [`Inline::Strong`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    Paragraph(Vec<Inline>),
    List(List),
    /// A fenced code block: its language, if the info string starts with a plain word, and its
    /// verbatim text.
    Code {
        lang: Option<String>,
        text: String,
    },
    Quote(Vec<Block>),
}

/// A bullet list (`start` is `None`) or a numbered list starting at `start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List {
    pub start: Option<u32>,
    pub items: Vec<Item>,
}

/// A list item: inline text, then any lists nested under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub text: Vec<Inline>,
    pub sublists: Vec<List>,
}

/// Text-level content. Adjacent text is always merged into one [`Inline::Text`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inline {
    Text(String),
    Break,
    Code(String),
    Emphasis(Vec<Inline>),
    Strong(Vec<Inline>),
    /// A link; `href` has passed [`safe_href`].
    Link {
        href: String,
        text: Vec<Inline>,
    },
}

/// Returns the `href` for a link to `url`, or `None` if no link may be made: only `http:`,
/// `https:` and `mailto:` URLs pass; relative ones would point into the host page. Browsers strip
/// leading and trailing control characters and spaces from a URL and drop tabs and newlines
/// anywhere in it (so `" java\tscript:"` is `javascript:` to them), so the check does the same
/// and returns the URL as the browser will read it. Entities are not decoded, so
/// `javascript&#58;` has no scheme at all and is refused as relative.
pub fn safe_href(url: &str) -> Option<String> {
    let url: String = url
        .trim_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let (scheme, _) = url.split_once(':')?;
    ["http", "https", "mailto"].iter().any(|s| s.eq_ignore_ascii_case(scheme)).then_some(url)
}

/// Parses `text` into blocks. Never fails: whatever is not markdown is text.
pub fn parse(text: &str) -> Vec<Block> {
    blocks(&text.lines().collect::<Vec<_>>())
}

fn blocks(lines: &[&str]) -> Vec<Block> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&line) = lines.get(i) {
        let t = line.trim_start();
        let start = i;
        i += 1;
        if t.is_empty() {
            continue;
        } else if let Some((c, n, indent, info)) = fence(line) {
            let mut text = Vec::new();
            while let Some(l) = lines.get(i) {
                i += 1;
                let l_t = l.trim();
                if l_t.len() >= n && l_t.chars().all(|x| x == c) {
                    break;
                }
                // Inside a list item the fence is indented; its content is by the same amount.
                let skip = l.bytes().take(indent).take_while(|b| *b == b' ' || *b == b'\t').count();
                text.push(&l[skip..]);
            }
            let lang = info.split_whitespace().next().filter(|w| {
                w.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-'))
            });
            out.push(Block::Code { lang: lang.map(String::from), text: text.join("\n") });
        } else if let Some(h) = heading(t) {
            if !h.is_empty() {
                out.push(Block::Paragraph(vec![Inline::Strong(paragraph(h))]));
            }
        } else if t.starts_with('>') {
            while lines.get(i).is_some_and(|l| l.trim_start().starts_with('>')) {
                i += 1;
            }
            out.push(Block::Quote(blocks(
                &lines[start..i].iter().map(|l| unquote(l)).collect::<Vec<_>>(),
            )));
        } else if marker(line).is_some() {
            let (list, n) = list(&lines[start..], 0);
            i = start + n.max(1);
            out.push(Block::List(list));
        } else {
            // A list interrupts a paragraph only if it is a bullet list or starts at 1, so that a
            // line such as "2024. What a year." stays text.
            while lines.get(i).is_some_and(|l| {
                !l.trim().is_empty()
                    && !starts_block(l)
                    && marker(l).is_none_or(|m| m.start.is_some_and(|s| s != 1))
            }) {
                i += 1;
            }
            out.push(Block::Paragraph(paragraph(&joined(&lines[start..i]))));
        }
    }
    out
}

/// The lines trimmed and joined by newlines (which become line breaks).
fn joined(lines: &[&str]) -> String {
    lines.iter().map(|l| l.trim()).collect::<Vec<_>>().join("\n").trim().to_string()
}

/// An opening fence: its character, length, indentation and info string.
fn fence(line: &str) -> Option<(char, usize, usize, &str)> {
    let t = line.trim_start();
    let c = t.chars().next().filter(|c| matches!(c, '`' | '~'))?;
    let n = t.len() - t.trim_start_matches(c).len();
    let info = t[n..].trim();
    (n >= 3 && !(c == '`' && info.contains('`'))).then_some((c, n, line.len() - t.len(), info))
}

/// The text of an ATX heading line, without its optional closing `#`s.
fn heading(t: &str) -> Option<&str> {
    let rest = t.trim_start_matches('#');
    let level = t.len() - rest.len();
    ((1..=6).contains(&level) && (rest.is_empty() || rest.starts_with([' ', '\t']))).then(|| {
        let rest = rest.trim();
        let open = rest.trim_end_matches('#');
        if open.is_empty() || open.ends_with([' ', '\t']) { open.trim_end() } else { rest }
    })
}

/// Strips every level of `>` from a quote line, and one space after each.
fn unquote(mut line: &str) -> &str {
    while let Some(rest) = line.trim_start().strip_prefix('>') {
        line = rest.strip_prefix(' ').unwrap_or(rest);
    }
    line
}

fn starts_block(line: &str) -> bool {
    let t = line.trim_start();
    fence(line).is_some() || heading(t).is_some() || t.starts_with('>')
}

/// A list item's marker: its indentation in columns, its number if ordered, and the text after it.
struct Marker<'a> {
    indent: usize,
    start: Option<u32>,
    rest: &'a str,
}

fn indent(line: &str) -> usize {
    line.chars().take_while(|c| c.is_whitespace()).map(|c| if c == '\t' { 4 } else { 1 }).sum()
}

fn marker(line: &str) -> Option<Marker<'_>> {
    let t = line.trim_start();
    let digits = t.len() - t.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (start, after) = match digits {
        0 => (None, t.strip_prefix(['-', '*', '+'])?),
        1..=9 => (Some(t[..digits].parse().ok()?), t[digits..].strip_prefix(['.', ')'])?),
        _ => return None,
    };
    (after.is_empty() || after.starts_with([' ', '\t'])).then(|| Marker {
        indent: indent(line),
        start,
        rest: after.trim(),
    })
}

/// Parses the list starting at `lines[0]`, which is an item; returns it and the lines it used.
fn list(lines: &[&str], depth: usize) -> (List, usize) {
    let mut list = List { start: None, items: Vec::new() };
    let (mut i, mut base) = (0, 0);
    while let Some(m) = lines.get(i).and_then(|l| marker(l)) {
        if list.items.is_empty() {
            (base, list.start) = (m.indent, m.start);
        } else if m.start.is_some() != list.start.is_some() {
            break;
        }
        let mut body = vec![m.rest];
        let mut end = false;
        i += 1;
        while let Some(&l) = lines.get(i) {
            if l.trim().is_empty() {
                // A blank line ends the list unless an item or indented text follows. Inside an
                // item (depth > 0) every line already belongs to that item.
                let j = lines[i..]
                    .iter()
                    .position(|l| !l.trim().is_empty())
                    .map_or(lines.len(), |k| i + k);
                let next = lines.get(j).is_some_and(|n| {
                    indent(n) >= base + 2
                        || marker(n).is_some_and(|n| n.start.is_some() == list.start.is_some())
                });
                if !(next || (depth > 0 && j < lines.len())) {
                    end = true;
                    break;
                }
                body.push("");
                i = j;
            } else if starts_block(l) {
                end = true;
                break;
            } else if marker(l).is_some() && !(depth < MAX_LIST_DEPTH && indent(l) >= base + 2) {
                break;
            } else {
                body.push(l);
                i += 1;
            }
        }
        list.items.push(item(&body, depth));
        if end {
            break;
        }
    }
    (list, i)
}

/// Parses an item's lines: the first is the text after the marker; nested items start lists.
fn item(body: &[&str], depth: usize) -> Item {
    let k = body.iter().skip(1).position(|l| marker(l).is_some()).map_or(body.len(), |k| k + 1);
    let mut sublists = Vec::new();
    let mut rest = &body[k..];
    while !rest.is_empty() {
        // Only blank lines can follow the last nested list; they make an empty one.
        let (sub, n) = list(rest, depth + 1);
        if !sub.items.is_empty() {
            sublists.push(sub);
        }
        rest = &rest[n.max(1)..];
    }
    Item { text: paragraph(&joined(&body[..k])), sublists }
}

/// Parses a paragraph's (or heading's, or item's) text into inline content.
fn paragraph(text: &str) -> Vec<Inline> {
    let text = Text::new(text);
    inlines(&text, 0, text.s.len(), 0, true)
}

/// Inline text with, found in one pass over it, where each `[` and `(` and each run of
/// backticks closes. Looking closers up instead of scanning ahead for them keeps parsing linear:
/// the scan from every `[` of an answer of 4,000 unclosed ones took 8 million steps, and an
/// answer is parsed again for every token that streams in.
struct Text<'a> {
    s: &'a str,
    /// For a `[` or `(` at byte `i`, the byte index of the bracket that closes it (0: none).
    /// Brackets pair as `matching` counted them: each kind on its own, code spans and escapes
    /// included, which is what lets a link's URL hold balanced parentheses.
    closing: Vec<usize>,
    /// Where the maximal runs of backticks start, by length (`runs[n - 1]`: the runs of `n`), in
    /// order. (Filled in order, so nothing needs sorting: a sort would add kilobytes.)
    runs: Vec<Vec<usize>>,
}

impl<'a> Text<'a> {
    fn new(s: &'a str) -> Self {
        let bytes = s.as_bytes();
        let mut closing = vec![0; bytes.len()];
        let (mut squares, mut rounds, mut runs) = (Vec::new(), Vec::new(), Vec::<Vec<_>>::new());
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            match b {
                b'[' => squares.push(i),
                b'(' => rounds.push(i),
                b']' | b')' => {
                    if let Some(o) = if b == b']' { squares.pop() } else { rounds.pop() } {
                        closing[o] = i;
                    }
                }
                b'`' => {
                    let n = ticks(&s[i..]);
                    if runs.len() < n {
                        runs.resize_with(n, Vec::new);
                    }
                    runs[n - 1].push(i);
                    i += n - 1;
                }
                _ => {}
            }
            i += 1;
        }
        Self { s, closing, runs }
    }

    /// The index of the bracket closing the one at `at`, if it closes before `end`.
    fn closer(&self, at: usize, end: usize) -> Option<usize> {
        self.closing.get(at).copied().filter(|&j| j > at && j < end)
    }

    /// Where the first run of exactly `n` backticks after `at` starts, if it ends by `end`.
    fn run_after(&self, at: usize, n: usize, end: usize) -> Option<usize> {
        let runs = self.runs.get(n.checked_sub(1)?)?;
        runs.get(runs.partition_point(|&start| start <= at)).copied().filter(|&start| start < end)
    }
}

/// The length of the run of backticks `s` starts with.
fn ticks(s: &str) -> usize {
    s.len() - s.trim_start_matches('`').len()
}

/// Parses `t.s[start..end]` into inline content; `links` is false inside a link's text, where
/// links cannot nest.
fn inlines(t: &Text<'_>, start: usize, end: usize, depth: u8, links: bool) -> Vec<Inline> {
    let s = &t.s[..end];
    let mut out = Vec::new();
    let mut unclosed = [false; 4];
    let mut i = start;
    while let Some(c) = s[i..].chars().next() {
        let rest = &s[i..];
        let before = s[start..i].chars().next_back();
        let deeper = depth < MAX_INLINE_DEPTH;
        let found = match c {
            '\\' => rest[1..]
                .chars()
                .next()
                .filter(char::is_ascii_punctuation)
                .map(|p| (vec![Inline::Text(p.into())], 1 + p.len_utf8())),
            '\n' => Some((vec![Inline::Break], 1)),
            '`' => Some(code_span(t, i, end)),
            '*' | '_' if deeper => emphasis(t, i, end, before, depth, links, &mut unclosed),
            '[' if deeper && links => link(t, i, end, depth),
            // Not right after `](`, where a link being streamed shows its text until it closes.
            'h' if links
                && !before.is_some_and(|c| c.is_ascii_alphanumeric())
                && !s[start..i].ends_with("](") =>
            {
                autolink(rest)
            }
            _ => None,
        };
        let Some((nodes, len)) = found else {
            // Plain text joins the text before it without a node of its own.
            match out.last_mut() {
                Some(Inline::Text(text)) => text.push(c),
                _ => out.push(Inline::Text(c.into())),
            }
            i += c.len_utf8();
            continue;
        };
        for node in nodes {
            match (out.last_mut(), node) {
                (Some(Inline::Text(a)), Inline::Text(b)) => a.push_str(&b),
                (_, node) => out.push(node),
            }
        }
        i += len;
    }
    out
}

/// A code span opened by the run of backticks at `at`, closed by a run of the same length before
/// `end`; an unclosed run is literal text.
fn code_span(t: &Text<'_>, at: usize, end: usize) -> (Vec<Inline>, usize) {
    let n = ticks(&t.s[at..end]);
    let Some(close) = t.run_after(at, n, end) else {
        return (vec![Inline::Text(t.s[at..at + n].into())], n);
    };
    let code = &t.s[at + n..close];
    let code = match code.strip_prefix(' ').and_then(|c| c.strip_suffix(' ')) {
        Some(inner) if !inner.trim().is_empty() => inner,
        _ => code,
    };
    (vec![Inline::Code(code.replace('\n', " "))], close + n - at)
}

/// Emphasis (one delimiter) or strong (two) opened at `at`, if it closes before `end`.
/// `unclosed` remembers which of `*`, `**`, `_`, `__` found no closer earlier in the same text: a
/// later search would scan a part of the same text again, which made `*a *a *a …` quadratic.
fn emphasis(
    t: &Text<'_>,
    at: usize,
    end: usize,
    before: Option<char>,
    depth: u8,
    links: bool,
    unclosed: &mut [bool; 4],
) -> Option<(Vec<Inline>, usize)> {
    let rest = &t.s[at..end];
    let c = rest.chars().next()?;
    let n = if rest[1..].starts_with(c) { 2 } else { 1 };
    // `_` does not open or close inside a word, so snake_case stays text. (ASCII words only: the
    // Unicode letter tables would cost kilobytes.)
    let opens = rest[n..].starts_with(|x: char| !x.is_whitespace())
        && !(c == '_' && before.is_some_and(|c| c.is_ascii_alphanumeric()));
    let seen = &mut unclosed[usize::from(c == '_') * 2 + n - 1];
    if !opens || *seen {
        return None;
    }
    let Some(close) = closer(t, at, end, n, c) else {
        *seen = true;
        return None;
    };
    let inner = inlines(t, at + n, at + close, depth + 1, links);
    Some((vec![if n == 2 { Inline::Strong(inner) } else { Inline::Emphasis(inner) }], close + n))
}

/// Where (from `at`) the run of `n` `c`s that closes an emphasis opened at `at` starts. A closing
/// run is not preceded by whitespace; emphasis takes the last `c` of a run of one or three,
/// strong the last two of a run of two or more. Code spans are skipped.
fn closer(t: &Text<'_>, at: usize, end: usize, n: usize, c: char) -> Option<usize> {
    let rest = &t.s[at..end];
    let mut j = n;
    while let Some(k) = rest[j..].find(['`', '\\', c]) {
        let from = j + k;
        let tail = &rest[from..];
        if tail.starts_with('`') {
            j = from + code_span(t, at + from, end).1;
        } else if let Some(escaped) = tail.strip_prefix('\\') {
            j = from + 1 + escaped.chars().next().map_or(0, char::len_utf8);
        } else {
            let stop = from + tail.len() - tail.trim_start_matches(c).len();
            let run = stop - from;
            let fits = if n == 2 { run >= 2 } else { run % 2 == 1 };
            let after = rest[stop..].chars().next();
            if fits
                && stop - n > n
                && !rest[..from].ends_with(char::is_whitespace)
                && !(c == '_' && after.is_some_and(|c| c.is_ascii_alphanumeric()))
            {
                return Some(stop - n);
            }
            j = stop;
        }
    }
    None
}

/// `[text](url)` at `at`, closed before `end`. A URL that [`safe_href`] refuses leaves the text
/// alone.
fn link(t: &Text<'_>, at: usize, end: usize, depth: u8) -> Option<(Vec<Inline>, usize)> {
    let close = t.closer(at, end)?;
    let paren = close + 1;
    if t.s.as_bytes().get(paren) != Some(&b'(') {
        return None;
    }
    let paren_close = t.closer(paren, end)?;
    let target = &t.s[paren + 1..paren_close];
    // A title after the URL is ignored; `<url>` is unwrapped.
    let url = target.split_whitespace().next().unwrap_or_default();
    let url = url.strip_prefix('<').and_then(|u| u.strip_suffix('>')).unwrap_or(url);
    let text = inlines(t, at + 1, close, depth + 1, false);
    let nodes = match safe_href(url) {
        Some(href) => vec![Inline::Link { href, text }],
        None => text,
    };
    Some((nodes, paren_close + 1 - at))
}

/// A bare `http://` or `https://` URL at the start of `rest`. Punctuation that ends a sentence is
/// not part of it, nor is a `)` that closes no `(` inside it.
fn autolink(rest: &str) -> Option<(Vec<Inline>, usize)> {
    let host = rest.strip_prefix("https://").or_else(|| rest.strip_prefix("http://"))?;
    let end = rest.len() - host.len()
        + host
            .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '`'))
            .unwrap_or(host.len());
    let mut url = &rest[..end];
    // Counted once: trimming removes no `(`, and each `)` it removes is counted off, so a URL
    // ending in thousands of `)` is not counted again for each of them.
    let opens = url.matches('(').count();
    let mut closes = url.matches(')').count();
    loop {
        let t = url.trim_end_matches(['.', ',', ':', ';', '!', '?', '\'', '*', '_']);
        let t = match t.strip_suffix(')') {
            Some(s) if opens < closes => {
                closes -= 1;
                s
            }
            _ => t,
        };
        if t == url {
            break;
        }
        url = t;
    }
    if url.len() <= rest.len() - host.len() {
        return None;
    }
    let link = Inline::Link { href: safe_href(url)?, text: vec![Inline::Text(url.into())] };
    Some((vec![link], url.len()))
}

/// Replaces `parent`'s children with `text` rendered as markdown.
pub fn render_into(parent: &Element, text: &str) -> Result<(), JsValue> {
    parent.set_text_content(None);
    Rendered::default().update(parent, text)
}

/// What an element shows of an answer that grows as it streams, so that each update rebuilds
/// only what changed: the blocks from the first one that differs from those shown, and in a
/// paragraph that grew, its nodes from the first inline that differs. The text is parsed whole
/// every time (parsing is linear, and a block that looked finished can still change: `1.` starts
/// a list that `1.5` takes back), but the DOM work is proportional to the change, where
/// rebuilding an answer of 1,000 code spans for every token made streaming it quadratic.
///
/// The comparison is enough because each block is one child element of the answer's element
/// and each inline one child node of its paragraph (adjacent text is merged into one node).
#[derive(Debug, Default)]
pub struct Rendered {
    blocks: Vec<Block>,
}

impl Rendered {
    /// Makes `parent`, which shows what the previous update rendered (or nothing, for a new
    /// `Rendered`), show `text`.
    pub fn update(&mut self, parent: &Element, text: &str) -> Result<(), JsValue> {
        let blocks = parse(text);
        let result = patch(parent, &self.blocks, &blocks);
        if result.is_ok() {
            self.blocks = blocks;
        } else {
            // The element no longer matches any parse: start again from nothing.
            self.blocks.clear();
            parent.set_text_content(None);
        }
        result
    }
}

fn patch(parent: &Element, shown: &[Block], blocks: &[Block]) -> Result<(), JsValue> {
    let doc =
        parent.owner_document().ok_or_else(|| JsValue::from_str("element has no document"))?;
    let mut kept = shown.iter().zip(blocks).take_while(|(a, b)| a == b).count();
    if let (Some(Block::Paragraph(old)), Some(Block::Paragraph(new))) =
        (shown.get(kept), blocks.get(kept))
    {
        let mut p = parent.first_element_child();
        for _ in 0..kept {
            p = p.and_then(|e| e.next_element_sibling());
        }
        if let Some(p) = p {
            let same = old.iter().zip(new).take_while(|(a, b)| a == b).count();
            truncate(&p, same)?;
            render_inlines(&doc, &p, &new[same..])?;
            kept += 1;
        }
    }
    truncate(parent, kept)?;
    blocks[kept..].iter().try_for_each(|block| render_block(&doc, parent, block))
}

/// Removes `parent`'s child nodes after the first `keep`.
fn truncate(parent: &Element, keep: usize) -> Result<(), JsValue> {
    let mut node = parent.first_child();
    for _ in 0..keep {
        node = node.and_then(|n| n.next_sibling());
    }
    while let Some(n) = node {
        node = n.next_sibling();
        parent.remove_child(&n)?;
    }
    Ok(())
}

fn child(doc: &Document, parent: &Element, tag: &str) -> Result<Element, JsValue> {
    let el = doc.create_element(tag)?;
    parent.append_child(&el)?;
    Ok(el)
}

fn render_block(doc: &Document, parent: &Element, block: &Block) -> Result<(), JsValue> {
    match block {
        Block::Paragraph(inlines) => render_inlines(doc, &child(doc, parent, "p")?, inlines),
        Block::List(list) => render_list(doc, parent, list),
        Block::Code { lang, text } => {
            let code = child(doc, &child(doc, parent, "pre")?, "code")?;
            if let Some(lang) = lang {
                code.set_attribute("class", &["language-", lang].concat())?;
            }
            code.set_text_content(Some(text));
            Ok(())
        }
        Block::Quote(blocks) => {
            let quote = child(doc, parent, "blockquote")?;
            blocks.iter().try_for_each(|block| render_block(doc, &quote, block))
        }
    }
}

fn render_list(doc: &Document, parent: &Element, list: &List) -> Result<(), JsValue> {
    let el = child(doc, parent, if list.start.is_some() { "ol" } else { "ul" })?;
    if let Some(start) = list.start.filter(|s| *s != 1) {
        el.set_attribute("start", &crate::text::decimal(u64::from(start)))?;
    }
    for item in &list.items {
        let li = child(doc, &el, "li")?;
        render_inlines(doc, &li, &item.text)?;
        item.sublists.iter().try_for_each(|sub| render_list(doc, &li, sub))?;
    }
    Ok(())
}

fn render_inlines(doc: &Document, parent: &Element, inlines: &[Inline]) -> Result<(), JsValue> {
    for inline in inlines {
        match inline {
            Inline::Text(text) => parent.append_with_str_1(text)?,
            Inline::Break => {
                child(doc, parent, "br")?;
            }
            Inline::Code(text) => child(doc, parent, "code")?.set_text_content(Some(text)),
            Inline::Emphasis(inner) => render_inlines(doc, &child(doc, parent, "em")?, inner)?,
            Inline::Strong(inner) => render_inlines(doc, &child(doc, parent, "strong")?, inner)?,
            Inline::Link { href, text } => {
                let a = child(doc, parent, "a")?;
                a.set_attribute("href", href)?;
                a.set_attribute("rel", "noopener noreferrer")?;
                a.set_attribute("target", "_blank")?;
                render_inlines(doc, &a, text)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod reference;

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn text(s: &str) -> Inline {
        Inline::Text(s.into())
    }

    fn para(inlines: Vec<Inline>) -> Block {
        Block::Paragraph(inlines)
    }

    fn link(href: &str, label: &str) -> Inline {
        Inline::Link { href: href.into(), text: vec![text(label)] }
    }

    fn bullets(items: &[&str]) -> List {
        let items = items.iter().map(|s| Item { text: vec![text(s)], sublists: vec![] }).collect();
        List { start: None, items }
    }

    #[test]
    fn splits_paragraphs_on_blank_lines_and_breaks_lines_inside_them() {
        assert_eq!(
            parse("one\ntwo  \n\n\nthree"),
            vec![para(vec![text("one"), Inline::Break, text("two")]), para(vec![text("three")])]
        );
        assert_eq!(parse(""), vec![]);
        assert_eq!(parse(" \n\t\n"), vec![]);
    }

    #[test]
    fn parses_emphasis_strong_and_code() {
        use Inline::{Code, Emphasis, Strong};
        assert_eq!(
            parse("*a* _b_ **c** __d__ `e`"),
            vec![para(vec![
                Emphasis(vec![text("a")]),
                text(" "),
                Emphasis(vec![text("b")]),
                text(" "),
                Strong(vec![text("c")]),
                text(" "),
                Strong(vec![text("d")]),
                text(" "),
                Code("e".into()),
            ])]
        );
        assert_eq!(
            parse("***both*** and **a *b* c**"),
            vec![para(vec![
                Strong(vec![Emphasis(vec![text("both")])]),
                text(" and "),
                Strong(vec![text("a "), Emphasis(vec![text("b")]), text(" c")]),
            ])]
        );
    }

    #[test]
    fn reads_no_markdown_inside_code_spans() {
        assert_eq!(
            parse("`**a** [x](http://e)` and `` a`b ``"),
            vec![para(vec![
                Inline::Code("**a** [x](http://e)".into()),
                text(" and "),
                Inline::Code("a`b".into()),
            ])]
        );
    }

    #[test]
    fn leaves_unmatched_and_intraword_delimiters_alone() {
        for s in
            ["snake_case_name", "2 * 3 * 4", "**open", "a_b", "``not closed`", "\\*lit\\*", "***"]
        {
            let shown = s.replace('\\', "");
            assert_eq!(parse(s), vec![para(vec![text(&shown)])], "{s}");
        }
    }

    #[test]
    fn renders_headings_as_bold_paragraphs() {
        assert_eq!(
            parse("# Title #\n###### Six\n####### seven\n#tag"),
            vec![
                para(vec![Inline::Strong(vec![text("Title")])]),
                para(vec![Inline::Strong(vec![text("Six")])]),
                para(vec![text("####### seven"), Inline::Break, text("#tag")]),
            ]
        );
    }

    #[test]
    fn parses_bullet_lists_and_lists_that_interrupt_a_paragraph() {
        assert_eq!(
            parse("Steps:\n- a\n* b\n+ c"),
            vec![para(vec![text("Steps:")]), Block::List(bullets(&["a", "b", "c"]))]
        );
    }

    #[test]
    fn keeps_the_start_number_of_ordered_lists() {
        let ordered =
            |start, items: &[&str]| Block::List(List { start: Some(start), ..bullets(items) });
        assert_eq!(parse("1. a\n2) b"), vec![ordered(1, &["a", "b"])]);
        assert_eq!(parse("3. c\n4. d"), vec![ordered(3, &["c", "d"])]);
        // A number other than 1 does not interrupt a paragraph.
        assert_eq!(
            parse("In\n2024. it rained"),
            vec![para(vec![text("In"), Inline::Break, text("2024. it rained")])]
        );
    }

    #[test]
    fn nests_indented_items_and_continues_items_over_lines_and_blank_lines() {
        let doc =
            "1. first\n   - inner\n     more\n   - inner 2\n\n2. second\n\n   detail\n\nafter";
        let inner = List {
            start: None,
            items: vec![
                Item { text: vec![text("inner"), Inline::Break, text("more")], sublists: vec![] },
                Item { text: vec![text("inner 2")], sublists: vec![] },
            ],
        };
        let second = vec![text("second"), Inline::Break, Inline::Break, text("detail")];
        assert_eq!(
            parse(doc),
            vec![
                Block::List(List {
                    start: Some(1),
                    items: vec![
                        Item { text: vec![text("first")], sublists: vec![inner] },
                        Item { text: second, sublists: vec![] },
                    ],
                }),
                para(vec![text("after")]),
            ]
        );
    }

    #[test]
    fn flattens_lists_nested_deeper_than_three_levels() {
        let blocks = parse("- a\n  - b\n    - c\n      - d\n        - e");
        let Some(Block::List(a)) = blocks.first() else { panic!("{blocks:?}") };
        let c = &a.items[0].sublists[0].items[0].sublists[0];
        assert_eq!(c, &bullets(&["c", "d", "e"]));
    }

    #[test]
    fn parses_fenced_code_verbatim_with_a_safe_language() {
        assert_eq!(
            parse("```rust\nlet a = *b*;\n\n<b>x</b>\n```\nafter"),
            vec![
                Block::Code { lang: Some("rust".into()), text: "let a = *b*;\n\n<b>x</b>".into() },
                para(vec![text("after")]),
            ]
        );
        assert_eq!(
            parse("~~~ c++ extra\nx\n~~~~"),
            vec![Block::Code { lang: Some("c++".into()), text: "x".into() }]
        );
        assert_eq!(
            parse("```\"><script>\nx\n```"),
            vec![Block::Code { lang: None, text: "x".into() }]
        );
        // A fence in a list item is indented, and so is its content.
        assert_eq!(
            parse("- run:\n  ```sh\n  cargo test\n    indented\n  ```"),
            vec![
                Block::List(bullets(&["run:"])),
                Block::Code { lang: Some("sh".into()), text: "cargo test\n  indented".into() },
            ]
        );
    }

    #[test]
    fn runs_an_unclosed_fence_to_the_end() {
        assert_eq!(
            parse("text\n```py\nprint(1)\n\n# not a heading"),
            vec![
                para(vec![text("text")]),
                Block::Code { lang: Some("py".into()), text: "print(1)\n\n# not a heading".into() },
            ]
        );
    }

    #[test]
    fn parses_quotes_and_flattens_nested_ones() {
        assert_eq!(
            parse("> a\n> b\n>\n> > - c\nd"),
            vec![
                Block::Quote(vec![
                    para(vec![text("a"), Inline::Break, text("b")]),
                    Block::List(bullets(&["c"])),
                ]),
                para(vec![text("d")]),
            ]
        );
    }

    #[test]
    fn parses_links_and_autolinks() {
        assert_eq!(
            parse("[the *docs*](https://e.com/a_(b) \"title\") and https://e.com/x_y."),
            vec![para(vec![
                Inline::Link {
                    href: "https://e.com/a_(b)".into(),
                    text: vec![text("the "), Inline::Emphasis(vec![text("docs")])],
                },
                text(" and "),
                link("https://e.com/x_y", "https://e.com/x_y"),
                text("."),
            ])]
        );
        assert_eq!(
            parse("(see http://e.com) [https://e.com](https://e.com) xhttp://e.com"),
            vec![para(vec![
                text("(see "),
                link("http://e.com", "http://e.com"),
                text(") "),
                link("https://e.com", "https://e.com"),
                text(" xhttp://e.com"),
            ])]
        );
        assert_eq!(
            parse("[mail](mailto:a@e.com)"),
            vec![para(vec![link("mailto:a@e.com", "mail")])]
        );
        // A link still being streamed stays text, rather than linking half its URL.
        assert_eq!(parse("[a link](https://e.co"), vec![para(vec![text("[a link](https://e.co")])]);
    }

    #[test]
    fn shows_only_the_text_of_links_with_unsafe_or_relative_urls() {
        for url in [
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "data:text/html,x",
            "//evil.com",
            "/a",
            "b",
        ] {
            assert_eq!(
                parse(&format!("[x *y*](<{url}>)!")),
                vec![para(vec![text("x "), Inline::Emphasis(vec![text("y")]), text("!"),])]
            );
        }
    }

    #[test]
    fn keeps_raw_html_as_text() {
        let html = "<img src=x onerror=alert(1)> <script>alert(1)</script>";
        assert_eq!(parse(html), vec![para(vec![text(html)])]);
    }

    #[test]
    fn allows_only_http_https_and_mailto_hrefs() {
        for ok in [
            "http://e.com",
            "https://e.com/a?b#c",
            "HTTPS://E.COM",
            "mailto:a@e.com",
            "https:e.com",
        ] {
            assert_eq!(safe_href(ok).as_deref(), Some(ok));
        }
        assert_eq!(safe_href("  https://e.com\n").as_deref(), Some("https://e.com"));
        assert_eq!(safe_href("\u{1}ht\ttp\ns://e.com/a\tb").as_deref(), Some("https://e.com/ab"));
        for bad in [
            "javascript:alert(1)",
            " JaVaScRiPt:alert(1)",
            "java\tscript:alert(1)",
            "java\nscript:alert(1)",
            "\u{0}javascript:alert(1)",
            "\u{1f}javascript:alert(1)",
            "javascript&#58;alert(1)",
            "javascript\u{ff1a}alert(1)",
            "vbscript:msgbox(1)",
            "data:text/html,<script>alert(1)</script>",
            "file:///etc/passwd",
            "//evil.com",
            "/relative",
            "relative/path:x",
            "#top",
            ":",
            "",
        ] {
            assert_eq!(safe_href(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parses_every_prefix_of_a_streamed_answer() {
        let doc = "# Setup *now*\n\nRun **this** with `cargo` — see [the docs](https://e.com/a_(b)) or \
                   https://e.com.\n\n1. first _one_\n   - nested **bold\n     more\n\n2) second\n\n> quoted\n> > \
                   deeper [x](javascript:alert(1))\n\n```rust\nfn main() {}\n```\n~~~\nunclosed ünïcödé 😀\n\\*esc\\*";
        for (i, _) in doc.char_indices() {
            let blocks = parse(&doc[..i]);
            assert!(i < 3 || !blocks.is_empty(), "{:?}", &doc[..i]);
        }
        let blocks = parse(doc);
        assert_eq!(blocks.len(), 6, "{blocks:#?}");
        assert!(matches!(blocks.last(), Some(Block::Code { lang: None, .. })));
    }

    #[test]
    fn survives_deeply_nested_and_pathological_input() {
        for unit in ["*a ", "**", "[", "[a](", "> ", "- ", "  - ", "_", "`", "\\", "h"] {
            let doc = unit.repeat(5_000);
            let _ = parse(&doc);
            let _ =
                parse(&format!("{doc}x{}", unit.chars().rev().collect::<String>().repeat(5_000)));
        }
    }

    /// A small deterministic generator (xorshift), so that the generated documents are the same
    /// on every run.
    struct Seed(u64);

    impl Seed {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// Documents made of the pieces every construct is made of, in any order.
    fn generated(count: usize, length: usize) -> Vec<String> {
        const PIECES: [&str; 34] = [
            "a",
            "b c",
            " ",
            "\n",
            "\n\n",
            "*",
            "**",
            "_",
            "__",
            "`",
            "``",
            "```",
            "\\",
            "\\`",
            "[",
            "]",
            "(",
            ")",
            "](",
            "[x](https://e.com/",
            "http://e.com/a",
            "https://e.com/(b)",
            "javascript:",
            "<b>",
            "- ",
            "1. ",
            "  - ",
            "> ",
            "# ",
            "~~~",
            "ü",
            "😀",
            ".",
            "snake_case",
        ];
        let mut seed = Seed(0x9e37_79b9_7f4a_7c15);
        (0..count)
            .map(|_| (0..length).map(|_| PIECES[seed.below(PIECES.len())]).collect())
            .collect()
    }

    /// Every prefix of `doc` (as a stream shows it), ending with the whole.
    fn prefixes(doc: &str) -> impl Iterator<Item = &str> {
        doc.char_indices().map(|(i, _)| &doc[..i]).chain([doc])
    }

    // Natively under `cargo test`, and in headless Chromium under wasm-bindgen-test.
    #[wasm_bindgen_test(unsupported = test)]
    fn parses_every_prefix_of_every_document_as_the_quadratic_parser_did() {
        let written = [
            "# Setup *now*\n\nRun **this** with `cargo` — see [the docs](https://e.com/a_(b)) or \
             https://e.com.\n\n1. first _one_\n   - nested **bold\n     more\n\n2) second\n\n> quoted\n\
             > > deeper [x](javascript:alert(1))\n\n```rust\nfn main() {}\n```\n~~~\nunclosed\n\\*esc\\*",
            "[a [nested] link](https://e.com/x) [no](link [b](<https://e.com/ a>) ((x) [c](d)",
            "`a` ``b ` c`` ```d``` `e ``f`` g` \\`h` [`i]`](https://e.com) *`j*` **k `l**` m**",
            "http://e.com/a)) (http://e.com/b) http://e.com/c).,;!? https://e.com/((d)))",
        ];
        let docs = written.iter().map(|d| d.to_string()).chain(generated(300, 24));
        for doc in docs {
            for prefix in prefixes(&doc) {
                assert_eq!(parse(prefix), reference::parse(prefix), "{prefix:?}");
            }
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn parses_pathological_repetitions_as_the_quadratic_parser_did() {
        for unit in
            ["[", "[a](", "(", "\\`` ", "`` ` ", "`a", "*a ``", "a) ", "http://e.com/)", "![x]("]
        {
            let doc = unit.repeat(300);
            assert_eq!(parse(&doc), reference::parse(&doc), "{unit:?}");
            let closed = format!("{doc}x{}", unit.chars().rev().collect::<String>().repeat(300));
            assert_eq!(parse(&closed), reference::parse(&closed), "{unit:?} closed");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn an_answer_of_four_thousand_brackets_is_text_at_every_length() {
        // Quadratic parsing took about 14 s (natively) for these 4,000 parses; this takes
        // milliseconds. No time is asserted: a regression shows as a test that hangs.
        let doc = "[".repeat(4_000);
        for prefix in prefixes(&doc).skip(1) {
            assert_eq!(parse(prefix), vec![para(vec![text(prefix)])]);
        }
        let links = "[a](https://e.com) ".repeat(2_000);
        let Some(Block::Paragraph(inlines)) = parse(&links).pop() else { panic!("no paragraph") };
        assert_eq!(inlines.len(), 4_000 - 1);
        assert_eq!(inlines[0], link("https://e.com", "a"));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn an_answer_of_two_thousand_backtick_runs_parses_at_every_length() {
        // Each of these runs once searched the rest of the answer for a closing run of its length
        // (there is none: the escape leaves a run of one in the middle of runs of two).
        let doc = "\\`` ".repeat(2_000);
        for (i, prefix) in prefixes(&doc).enumerate().step_by(5) {
            let blocks = parse(prefix);
            assert!(i == 0 || blocks.len() == 1, "{blocks:?}");
        }
        assert_eq!(parse(&doc), vec![para(vec![text(doc.replace('\\', "").trim_end())])]);
        let spans = "`a` ".repeat(2_000);
        let Some(Block::Paragraph(inlines)) = parse(&spans).pop() else { panic!("no paragraph") };
        assert_eq!(inlines.iter().filter(|i| **i == Inline::Code("a".into())).count(), 2_000);
    }
}
