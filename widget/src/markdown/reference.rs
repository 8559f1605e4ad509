//! The parser as it was before inline parsing was made linear (commit e480e6f), kept verbatim
//! for the tests only: the current parser must give the same blocks for every input this one
//! handles in reasonable time. It scanned ahead from every `[`, `(` and backtick run for its
//! closer, which made an answer of thousands of unclosed brackets quadratic to parse.

use super::{Block, Inline, Item, List, MAX_INLINE_DEPTH, MAX_LIST_DEPTH, safe_href};

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
                out.push(Block::Paragraph(vec![Inline::Strong(inlines(h, 0, true))]));
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
            out.push(Block::Paragraph(inlines(&joined(&lines[start..i]), 0, true)));
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
    Item { text: inlines(&joined(&body[..k]), 0, true), sublists }
}

/// Parses inline content; `links` is false inside a link's text, where links cannot nest.
fn inlines(s: &str, depth: u8, links: bool) -> Vec<Inline> {
    let mut out = Vec::new();
    let mut unclosed = [false; 4];
    let mut i = 0;
    while let Some(c) = s[i..].chars().next() {
        let rest = &s[i..];
        let before = s[..i].chars().next_back();
        let deeper = depth < MAX_INLINE_DEPTH;
        let found = match c {
            '\\' => rest[1..]
                .chars()
                .next()
                .filter(char::is_ascii_punctuation)
                .map(|p| (vec![Inline::Text(p.into())], 1 + p.len_utf8())),
            '\n' => Some((vec![Inline::Break], 1)),
            '`' => Some(code_span(rest)),
            '*' | '_' if deeper => emphasis(rest, before, depth, links, &mut unclosed),
            '[' if deeper && links => link(rest, depth),
            // Not right after `](`, where a link being streamed shows its text until it closes.
            'h' if links
                && !before.is_some_and(|c| c.is_ascii_alphanumeric())
                && !s[..i].ends_with("](") =>
            {
                autolink(rest)
            }
            _ => None,
        };
        let (nodes, len) = found.unwrap_or_else(|| (vec![Inline::Text(c.into())], c.len_utf8()));
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

/// A code span opened by the run of backticks at the start of `rest`, closed by a run of the same
/// length; an unclosed run is literal text.
fn code_span(rest: &str) -> (Vec<Inline>, usize) {
    let n = rest.len() - rest.trim_start_matches('`').len();
    let mut j = n;
    while let Some(k) = rest[j..].find('`') {
        let at = j + k;
        let m = rest[at..].len() - rest[at..].trim_start_matches('`').len();
        if m == n {
            let code = &rest[n..at];
            let code = match code.strip_prefix(' ').and_then(|c| c.strip_suffix(' ')) {
                Some(inner) if !inner.trim().is_empty() => inner,
                _ => code,
            };
            return (vec![Inline::Code(code.replace('\n', " "))], at + n);
        }
        j = at + m;
    }
    (vec![Inline::Text(rest[..n].into())], n)
}

/// Emphasis (one delimiter) or strong (two) opened at the start of `rest`, if it closes.
/// `unclosed` remembers which of `*`, `**`, `_`, `__` found no closer earlier in the same text: a
/// later search would scan a part of the same text again, which made `*a *a *a …` quadratic.
fn emphasis(
    rest: &str,
    before: Option<char>,
    depth: u8,
    links: bool,
    unclosed: &mut [bool; 4],
) -> Option<(Vec<Inline>, usize)> {
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
    let Some(end) = closer(rest, n, c) else {
        *seen = true;
        return None;
    };
    let inner = inlines(&rest[n..end], depth + 1, links);
    Some((vec![if n == 2 { Inline::Strong(inner) } else { Inline::Emphasis(inner) }], end + n))
}

/// Where the run of `n` `c`s that closes an emphasis opened at `rest[..n]` starts. A closing run
/// is not preceded by whitespace; emphasis takes the last `c` of a run of one or three, strong the
/// last two of a run of two or more. Code spans are skipped.
fn closer(rest: &str, n: usize, c: char) -> Option<usize> {
    let mut j = n;
    while let Some(k) = rest[j..].find(['`', '\\', c]) {
        let at = j + k;
        let tail = &rest[at..];
        if tail.starts_with('`') {
            j = at + code_span(tail).1;
        } else if let Some(escaped) = tail.strip_prefix('\\') {
            j = at + 1 + escaped.chars().next().map_or(0, char::len_utf8);
        } else {
            let end = at + tail.len() - tail.trim_start_matches(c).len();
            let run = end - at;
            let fits = if n == 2 { run >= 2 } else { run % 2 == 1 };
            let after = rest[end..].chars().next();
            if fits
                && end - n > n
                && !rest[..at].ends_with(char::is_whitespace)
                && !(c == '_' && after.is_some_and(|c| c.is_ascii_alphanumeric()))
            {
                return Some(end - n);
            }
            j = end;
        }
    }
    None
}

/// `[text](url)` at the start of `rest`. A URL that [`safe_href`] refuses leaves the text alone.
fn link(rest: &str, depth: u8) -> Option<(Vec<Inline>, usize)> {
    let close = matching(rest, b'[', b']')?;
    let paren = matching(&rest[close + 1..], b'(', b')')?;
    let target = &rest[close + 2..close + 1 + paren];
    // A title after the URL is ignored; `<url>` is unwrapped.
    let url = target.split_whitespace().next().unwrap_or_default();
    let url = url.strip_prefix('<').and_then(|u| u.strip_suffix('>')).unwrap_or(url);
    let text = inlines(&rest[1..close], depth + 1, false);
    let nodes = match safe_href(url) {
        Some(href) => vec![Inline::Link { href, text }],
        None => text,
    };
    Some((nodes, close + 2 + paren))
}

/// The index of the bracket closing the one `s` starts with.
fn matching(s: &str, open: u8, close: u8) -> Option<usize> {
    if s.as_bytes().first() != Some(&open) {
        return None;
    }
    let mut depth = 0usize;
    for (j, b) in s.bytes().enumerate() {
        if b == open {
            depth += 1;
        } else if b == close {
            depth -= 1;
            if depth == 0 {
                return Some(j);
            }
        }
    }
    None
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
    loop {
        let t = url.trim_end_matches(['.', ',', ':', ';', '!', '?', '\'', '*', '_']);
        let t = match t.strip_suffix(')') {
            Some(s) if t.matches('(').count() < t.matches(')').count() => s,
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
