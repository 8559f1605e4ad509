//! A document's sections split into passages: the unit the index retrieves and a prompt cites.
//!
//! Paragraphs are packed whole into passages of at most [`Limits::max_passage_chars`]
//! characters; a paragraph too long for one passage is split at sentence ends, a sentence too
//! long at spaces, and only a "word" longer than a whole passage (a hash, a minified line) is
//! cut. Passages never span sections, so each has one heading path, and they do not overlap
//! (see [`Limits::max_passage_chars`] for why).

use crate::{Document, IngestError, Limits};

/// A piece of a document small enough to put in a prompt, under its heading path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passage {
    pub heading_path: Vec<String>,
    pub text: String,
}

/// Split a document into passages, in document order. Refuses a document that makes more than
/// [`Limits::max_passages_per_document`], naming it.
pub fn passages(document: &Document, limits: &Limits) -> Result<Vec<Passage>, IngestError> {
    let max = limits.max_passage_chars.max(1);
    let mut passages = Vec::new();
    for section in &document.sections {
        let mut current = String::new();
        let mut current_chars = 0;
        let mut flush = |current: &mut String, current_chars: &mut usize| {
            let text = std::mem::take(current);
            *current_chars = 0;
            if text.chars().filter(|c| c.is_alphanumeric()).count() >= limits.min_passage_chars {
                passages.push(Passage { heading_path: section.heading_path.clone(), text });
            }
        };
        for paragraph in section.text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
            // Pieces of one paragraph are joined by a space, paragraphs by a blank line.
            for (index, piece) in pieces(paragraph, max).into_iter().enumerate() {
                let separator = if index == 0 { "\n\n" } else { " " };
                let piece_chars = piece.chars().count();
                if current_chars > 0 && current_chars + separator.len() + piece_chars > max {
                    flush(&mut current, &mut current_chars);
                }
                if current_chars > 0 {
                    current.push_str(separator);
                    current_chars += separator.len();
                }
                current.push_str(piece);
                current_chars += piece_chars;
            }
        }
        flush(&mut current, &mut current_chars);
        if passages.len() > limits.max_passages_per_document {
            break;
        }
    }
    if passages.len() > limits.max_passages_per_document {
        return Err(IngestError::TooManyPassages {
            name: document.name.clone(),
            limit: limits.max_passages_per_document,
        });
    }
    Ok(passages)
}

/// A paragraph as pieces of at most `max` characters: itself if it fits, else its sentences
/// (several packed into a piece while they fit), else its words.
fn pieces(paragraph: &str, max: usize) -> Vec<&str> {
    if paragraph.chars().count() <= max {
        return vec![paragraph];
    }
    let mut pieces = Vec::new();
    for sentence in pack(paragraph, sentence_ends(paragraph), max) {
        if sentence.chars().count() <= max {
            pieces.push(sentence);
            continue;
        }
        for words in pack(sentence, word_ends(sentence), max) {
            if words.chars().count() <= max {
                pieces.push(words);
            } else {
                pieces.extend(hard_cut(words, max));
            }
        }
    }
    pieces
}

/// Byte offsets just after each sentence end (`.`, `!`, `?` and closing quotes or brackets,
/// followed by whitespace), and the end of the text.
fn sentence_ends(text: &str) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut previous_terminal = false;
    for (at, c) in text.char_indices() {
        if c.is_whitespace() && previous_terminal {
            ends.push(at);
        }
        previous_terminal = matches!(c, '.' | '!' | '?' | '。' | '！' | '？')
            || (previous_terminal && matches!(c, '"' | '\'' | ')' | ']' | '”' | '’'));
    }
    ends.push(text.len());
    ends
}

/// Byte offsets of each whitespace run's start, and the end of the text.
fn word_ends(text: &str) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut previous_space = true;
    for (at, c) in text.char_indices() {
        if c.is_whitespace() && !previous_space {
            ends.push(at);
        }
        previous_space = c.is_whitespace();
    }
    ends.push(text.len());
    ends
}

/// Pieces of `text` cut only at `ends`, each as long as fits in `max` characters (a piece
/// between two consecutive ends may still be longer), trimmed.
fn pack(text: &str, ends: Vec<usize>, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut last_fitting = None;
    for end in ends {
        if text[start..end].trim().chars().count() <= max {
            last_fitting = Some(end);
            continue;
        }
        match last_fitting {
            Some(fitting) => {
                pieces.push(text[start..fitting].trim());
                start = fitting;
                // The unit that did not fit starts the next piece, which it may overflow.
                last_fitting = (text[start..end].trim().chars().count() <= max).then_some(end);
                if last_fitting.is_none() {
                    pieces.push(text[start..end].trim());
                    start = end;
                }
            }
            None => {
                pieces.push(text[start..end].trim());
                start = end;
            }
        }
    }
    if start < text.len() {
        pieces.push(text[start..].trim());
    }
    pieces.retain(|piece| !piece.is_empty());
    pieces
}

/// A word longer than a passage, cut every `max` characters.
fn hard_cut(word: &str, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    for (count, (at, _)) in word.char_indices().enumerate() {
        if count > 0 && count % max == 0 {
            pieces.push(&word[start..at]);
            start = at;
        }
    }
    pieces.push(&word[start..]);
    pieces
}
