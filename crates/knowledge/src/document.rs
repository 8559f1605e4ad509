//! Documents as handed in (a name, bytes, maybe a content type) turned into a [`Document`]: a
//! title and sections of text, each under its heading path. This module owns format detection,
//! the refusal of binary and oversized input, and the Markdown, plain-text and PDF readers; the
//! HTML reader lives in [`crate::html`].

use std::fmt;

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

use crate::IngestError;

/// The formats a document may come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Markdown,
    Html,
    Text,
    Pdf,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Markdown => "Markdown",
            Self::Html => "HTML",
            Self::Text => "plain text",
            Self::Pdf => "PDF",
        })
    }
}

impl Format {
    /// The format of a document, from its content type if it names one (a server's word wins
    /// over a URL's extension), else its name's extension, else its first bytes (`%PDF-`, or an
    /// HTML doctype or `<html>`).
    pub fn detect(
        name: &str,
        content_type: Option<&str>,
        bytes: &[u8],
    ) -> Result<Self, IngestError> {
        if let Some(content_type) = content_type {
            let essence =
                content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
            match essence.as_str() {
                "text/markdown" | "text/x-markdown" => return Ok(Self::Markdown),
                "text/html" | "application/xhtml+xml" => return Ok(Self::Html),
                "text/plain" => return Ok(Self::Text),
                "application/pdf" => return Ok(Self::Pdf),
                // Servers label anything they do not know this way: fall through to the name.
                "" | "application/octet-stream" | "binary/octet-stream" => {}
                other => {
                    return Err(IngestError::Unsupported {
                        name: name.to_owned(),
                        reason: format!("content type {other}"),
                    });
                }
            }
        }
        let file = name
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .rsplit('/')
            .next()
            .unwrap_or_default();
        if let Some((_, extension)) = file.rsplit_once('.') {
            match extension.to_ascii_lowercase().as_str() {
                "md" | "markdown" | "mdown" | "mkd" | "mdx" => return Ok(Self::Markdown),
                "html" | "htm" | "xhtml" => return Ok(Self::Html),
                "txt" | "text" => return Ok(Self::Text),
                "pdf" => return Ok(Self::Pdf),
                _ => {}
            }
        }
        if bytes.starts_with(b"%PDF-") {
            return Ok(Self::Pdf);
        }
        let head = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).to_ascii_lowercase();
        let head = head.trim_start_matches('\u{feff}').trim_start();
        if head.starts_with("<!doctype html") || head.starts_with("<html") {
            return Ok(Self::Html);
        }
        Err(IngestError::Unsupported {
            name: name.to_owned(),
            reason: match file.rsplit_once('.') {
                Some((_, extension)) => format!("extension .{extension}"),
                None => "no content type or extension".to_owned(),
            },
        })
    }
}

/// How much one document may cost. The defaults suit documentation pages and manuals; a caller
/// may lower them (tests do) or raise them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one document as handed in (5 MiB). Checked before any parsing, so a 1 GB file
    /// costs nothing but the refusal.
    pub max_document_bytes: usize,
    /// Passages one document may become (5,000: a document of `max_document_bytes` of prose
    /// makes about 4,500). More is an error rather than a silent truncation.
    pub max_passages_per_document: usize,
    /// Characters of one passage (1,200, about 250 words or 300 tokens): small enough that
    /// five retrieved passages cost a prompt some 1,500 tokens, large enough to hold a
    /// paragraph with its context. Passages do not overlap: each carries its heading path, it
    /// is split at paragraph and sentence ends, and an overlap would make two passages rank
    /// for the same words and spend the prompt's few sources on the same text twice.
    pub max_passage_chars: usize,
    /// Letters and digits a passage needs to be kept (3): a passage of a lone `|`, `©` or
    /// `—` left over from markup is noise, while a short answer such as "Yes." is not.
    pub min_passage_chars: usize,
    /// Elements of one HTML document (200,000; a large real page has some 10,000).
    pub max_html_elements: usize,
    /// Elements open at once in HTML (512; real pages stay under 100). Deeper is refused, so
    /// 200,000 nested `<div>`s end in an error, not in work proportional to their depth.
    pub max_html_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_document_bytes: 5 * 1024 * 1024,
            max_passages_per_document: 5_000,
            max_passage_chars: 1_200,
            min_passage_chars: 3,
            max_html_elements: 200_000,
            max_html_depth: 512,
        }
    }
}

/// A parsed document: its title and its text, in sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The name it was handed in under (a path or URL), used in errors and as its source.
    pub name: String,
    pub title: String,
    pub sections: Vec<Section>,
}

/// The text under one heading path. Paragraphs are separated by a blank line (`"\n\n"`);
/// a paragraph has no blank line in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The headings above this text, outermost first (empty before the first heading).
    pub heading_path: Vec<String>,
    pub text: String,
}

/// Parse a document of a known format. Refuses it, naming `name`, when it is larger than
/// `limits.max_document_bytes`, binary when it should be text, malformed, or empty.
pub fn parse(
    name: &str,
    bytes: &[u8],
    format: Format,
    limits: &Limits,
) -> Result<Document, IngestError> {
    if bytes.len() > limits.max_document_bytes {
        return Err(IngestError::TooLarge {
            name: name.to_owned(),
            size: bytes.len(),
            limit: limits.max_document_bytes,
        });
    }
    let document = match format {
        Format::Markdown => markdown(name, &decode_text(name, bytes, format)?),
        Format::Html => crate::html::parse(name, &decode_text(name, bytes, format)?, limits)?,
        Format::Text => text(name, &decode_text(name, bytes, format)?),
        Format::Pdf => pdf(name, bytes, limits)?,
    };
    if document.sections.is_empty() {
        return Err(IngestError::Empty { name: name.to_owned() });
    }
    Ok(document)
}

/// Share of a text document's characters that may be invalid UTF-8 (replaced by U+FFFD): a
/// stray Latin-1 byte in a UTF-8 page is tolerated, an image named `.md` is not.
const MAX_INVALID_UTF8_RATIO: f64 = 0.01;

/// The text of a text format, or a binary error. A NUL byte never occurs in text.
fn decode_text(name: &str, bytes: &[u8], format: Format) -> Result<String, IngestError> {
    let binary = |reason: String| IngestError::Binary { name: name.to_owned(), format, reason };
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        return Err(binary(format!("a NUL byte at offset {at}")));
    }
    let text = match declared_charset(bytes, format) {
        Some(encoding) => encoding.decode_without_bom_handling(bytes).0,
        None => String::from_utf8_lossy(bytes),
    };
    if let std::borrow::Cow::Owned(lossy) = &text {
        let (invalid, total) = lossy.chars().fold((0usize, 0usize), |(invalid, total), c| {
            (invalid + usize::from(c == char::REPLACEMENT_CHARACTER), total + 1)
        });
        #[expect(clippy::cast_precision_loss, reason = "a ratio of counts below 2^52")]
        if invalid as f64 > MAX_INVALID_UTF8_RATIO * total as f64 {
            return Err(binary(format!("{invalid} of {total} characters are not UTF-8")));
        }
    }
    Ok(text.trim_start_matches('\u{feff}').replace("\r\n", "\n").replace('\r', "\n"))
}

/// The legacy encoding an HTML page that is not UTF-8 declares in its head (`<meta
/// charset=...>` or `content="text/html; charset=..."`), if there is one: old sites are often
/// windows-1252, which would otherwise read as binary.
fn declared_charset(bytes: &[u8], format: Format) -> Option<&'static encoding_rs::Encoding> {
    if format != Format::Html || std::str::from_utf8(bytes).is_ok() {
        return None;
    }
    let head = bytes[..bytes.len().min(2048)].to_ascii_lowercase();
    let at = head.windows(8).position(|window| window == b"charset=")? + 8;
    let label: Vec<u8> = head[at..]
        .iter()
        .copied()
        .skip_while(|&b| b == b'"' || b == b'\'')
        .take_while(|&b| {
            b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b':' || b == b'.'
        })
        .collect();
    encoding_rs::Encoding::for_label(&label).filter(|encoding| *encoding != encoding_rs::UTF_8)
}

/// The name's last path segment without its extension: the title of a document that has none.
pub(crate) fn title_from_name(name: &str) -> String {
    let file = name
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .trim_end_matches('/')
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default();
    let stem = file.rsplit_once('.').map_or(file, |(stem, _)| stem);
    if stem.is_empty() { name.to_owned() } else { stem.to_owned() }
}

/// Collapse runs of whitespace into one space and trim.
pub(crate) fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Builds sections from a stream of headings and paragraphs; shared by the readers.
#[derive(Debug, Default)]
pub(crate) struct SectionBuilder {
    /// Open headings as (level, text), outermost first.
    headings: Vec<(u8, String)>,
    paragraphs: Vec<String>,
    sections: Vec<Section>,
}

impl SectionBuilder {
    /// A heading of `level` (1–6) starts a new section; headings of its level or deeper close.
    pub(crate) fn heading(&mut self, level: u8, text: &str) {
        let text = collapse_whitespace(text);
        if text.is_empty() {
            return;
        }
        self.finish_section();
        self.headings.retain(|(open, _)| *open < level);
        self.headings.push((level, text));
    }

    /// One paragraph of text; empty ones are skipped. Blank lines inside (in code) are
    /// squeezed so that a paragraph stays one paragraph.
    pub(crate) fn paragraph(&mut self, text: &str) {
        let mut squeezed = String::with_capacity(text.len());
        for line in text.trim().lines() {
            if line.trim().is_empty() {
                continue;
            }
            if !squeezed.is_empty() {
                squeezed.push('\n');
            }
            squeezed.push_str(line.trim_end());
        }
        if !squeezed.is_empty() {
            self.paragraphs.push(squeezed);
        }
    }

    fn finish_section(&mut self) {
        if self.paragraphs.is_empty() {
            return;
        }
        self.sections.push(Section {
            heading_path: self.headings.iter().map(|(_, text)| text.clone()).collect(),
            text: std::mem::take(&mut self.paragraphs).join("\n\n"),
        });
    }

    pub(crate) fn has_text(&self) -> bool {
        !self.sections.is_empty() || !self.paragraphs.is_empty()
    }

    pub(crate) fn finish(mut self) -> Vec<Section> {
        self.finish_section();
        self.sections
    }
}

/// Markdown: headings build the heading path, code blocks are kept as text (their lines
/// intact), front matter and raw HTML are dropped, and the title is the first H1.
fn markdown(name: &str, source: &str) -> Document {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_YAML_STYLE_METADATA_BLOCKS
        | Options::ENABLE_PLUSES_DELIMITED_METADATA_BLOCKS;
    let mut builder = SectionBuilder::default();
    let mut title = None;
    let mut paragraph = String::new();
    let mut heading: Option<String> = None;
    let mut in_metadata = false;
    let mut in_code = false;
    for event in Parser::new_ext(source, options) {
        match event {
            Event::Start(Tag::MetadataBlock(_)) => in_metadata = true,
            Event::End(TagEnd::MetadataBlock(_)) => in_metadata = false,
            Event::Start(Tag::Heading { .. }) => {
                builder.paragraph(&collapse_whitespace(&std::mem::take(&mut paragraph)));
                heading = Some(String::new());
            }
            Event::End(TagEnd::Heading(level)) => {
                let text = collapse_whitespace(&heading.take().unwrap_or_default());
                if level == HeadingLevel::H1 && title.is_none() && !text.is_empty() {
                    title = Some(text.clone());
                }
                builder.heading(level as u8, &text);
            }
            Event::Start(Tag::CodeBlock(_)) => {
                builder.paragraph(&collapse_whitespace(&std::mem::take(&mut paragraph)));
                in_code = true;
            }
            Event::End(TagEnd::CodeBlock) => {
                builder.paragraph(&std::mem::take(&mut paragraph));
                in_code = false;
            }
            Event::Start(
                Tag::Paragraph
                | Tag::Item
                | Tag::BlockQuote(_)
                | Tag::TableRow
                | Tag::TableHead
                | Tag::FootnoteDefinition(_),
            )
            | Event::End(
                TagEnd::Paragraph
                | TagEnd::Item
                | TagEnd::BlockQuote(_)
                | TagEnd::TableRow
                | TagEnd::TableHead
                | TagEnd::FootnoteDefinition,
            )
            | Event::Rule => {
                builder.paragraph(&collapse_whitespace(&std::mem::take(&mut paragraph)));
            }
            Event::End(TagEnd::TableCell) => paragraph.push_str(" | "),
            Event::Text(text) | Event::Code(text) if !in_metadata => match &mut heading {
                Some(heading) => heading.push_str(&text),
                None => paragraph.push_str(&text),
            },
            Event::SoftBreak | Event::HardBreak => match &mut heading {
                Some(heading) => heading.push(' '),
                None => paragraph.push(if in_code { '\n' } else { ' ' }),
            },
            _ => {}
        }
    }
    builder.paragraph(&collapse_whitespace(&paragraph));
    Document {
        name: name.to_owned(),
        title: title.unwrap_or_else(|| title_from_name(name)),
        sections: builder.finish(),
    }
}

/// Plain text: one section, paragraphs separated by blank lines.
fn text(name: &str, source: &str) -> Document {
    let mut builder = SectionBuilder::default();
    for paragraph in source.split("\n\n") {
        builder.paragraph(&collapse_whitespace(paragraph));
    }
    Document { name: name.to_owned(), title: title_from_name(name), sections: builder.finish() }
}

/// PDF: the text of each page as a section under the heading "Page N"; the title from the
/// document information dictionary, else the name.
///
/// lopdf returns errors for the malformed files we tried, but it is a large parser of a
/// hostile format with a history of panics on crafted input (index and arithmetic overflow),
/// so the call runs under `catch_unwind` and a panic becomes a malformed error. Decompressed
/// page content is bounded, so a small zip-bomb stream cannot inflate without limit.
fn pdf(name: &str, bytes: &[u8], limits: &Limits) -> Result<Document, IngestError> {
    let malformed = |reason: String| IngestError::Malformed {
        name: name.to_owned(),
        format: Format::Pdf,
        reason,
    };
    let max_decompressed = limits.max_document_bytes.saturating_mul(8);
    let extracted =
        std::panic::catch_unwind(|| -> Result<(Option<String>, Vec<String>), lopdf::Error> {
            let document = lopdf::Document::load_mem(bytes)?;
            let title = pdf_title(&document);
            let mut pages = Vec::new();
            for number in document.get_pages().into_keys() {
                pages.push(document.extract_text_with_limit(&[number], max_decompressed)?);
            }
            Ok((title, pages))
        });
    let (title, pages) = match extracted {
        Ok(Ok(extracted)) => extracted,
        Ok(Err(error)) => return Err(malformed(error.to_string())),
        Err(_) => return Err(malformed("the PDF parser failed on this file".to_owned())),
    };
    let mut builder = SectionBuilder::default();
    for (index, page) in pages.iter().enumerate() {
        builder.heading(1, &format!("Page {}", index + 1));
        // Lines of a PDF page are where the layout broke them, not paragraph ends; a blank
        // line is the best sign of a paragraph there is.
        for paragraph in page.split("\n\n") {
            builder.paragraph(&collapse_whitespace(paragraph));
        }
    }
    Ok(Document {
        name: name.to_owned(),
        title: title.unwrap_or_else(|| title_from_name(name)),
        sections: builder.finish(),
    })
}

/// The `/Title` of the trailer's `/Info` dictionary, decoded from UTF-16 (with its byte order
/// mark) or, approximately, PDFDocEncoding as Latin-1.
fn pdf_title(document: &lopdf::Document) -> Option<String> {
    let info = document.trailer.get(b"Info").ok()?;
    let info = match info {
        lopdf::Object::Reference(id) => document.get_object(*id).ok()?,
        other => other,
    };
    let lopdf::Object::String(bytes, _) = info.as_dict().ok()?.get(b"Title").ok()? else {
        return None;
    };
    let title = if let Some(utf16) = bytes.strip_prefix(&[0xfe, 0xff]) {
        let units: Vec<u16> =
            utf16.chunks_exact(2).map(|pair| u16::from_be_bytes([pair[0], pair[1]])).collect();
        String::from_utf16_lossy(&units)
    } else {
        bytes.iter().map(|&b| char::from(b)).collect()
    };
    let title = collapse_whitespace(&title);
    (!title.is_empty()).then_some(title)
}
