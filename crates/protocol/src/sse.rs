//! An incremental Server-Sent Events parser: bytes in as they arrive, complete events out. The
//! widget reads the relay's answers with it, and the relay reads its upstreams' answers with it.
//!
//! Hand-written on purpose, twice over. In the widget, an SSE crate would bring its own stream
//! machinery into the wasm module that every visitor downloads. In the relay, the
//! `eventsource-stream` crate it used before (nom combinators, a `String` per line) took about
//! 1.8 µs of CPU per event, a tenth of all the relay spent on a request in the benchmark
//! (BENCHMARKS.md); this parser borrows each line from its buffer and copies only the data.
//!
//! It follows the WHATWG rules the relay and the widget meet: lines end with CRLF, LF or a lone
//! CR (even split across two reads); a leading byte-order mark is skipped; `:` starts a comment;
//! `data` lines are joined with `\n`; an event is dispatched at a blank line if it has data; bytes
//! that are not UTF-8 become U+FFFD, as a browser's `EventSource` decodes them. `id` sets the
//! last event ID, which each event carries from then on (the widget resumes a relay stream from
//! it); `retry` is ignored.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event` field: `None` for the default type (`message`).
    pub event: Option<String>,
    pub data: String,
    /// The last event ID when the event was dispatched: its own `id` field's, or the latest one
    /// before it. `None` while the stream has set none.
    pub id: Option<String>,
}

impl SseEvent {
    /// A default-type (`message`) event.
    pub fn message(data: impl Into<String>) -> Self {
        Self { event: None, data: data.into(), id: None }
    }

    /// Whether the stream named this event's type `name` (`error` for a failed answer).
    pub fn is(&self, name: &str) -> bool {
        self.event.as_deref() == Some(name)
    }
}

#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of a line not yet ended.
    pending: Vec<u8>,
    fields: Fields,
    /// The last byte seen was a CR: a LF right after it ends nothing more.
    after_cr: bool,
    /// Past the start of the stream (where a byte-order mark may be).
    started: bool,
}

/// The event being built.
#[derive(Debug, Default)]
struct Fields {
    event: Option<String>,
    data: String,
    has_data: bool,
    /// Kept from event to event, as the last event ID is.
    last_id: Option<String>,
}

impl SseParser {
    /// Feeds bytes (any split, even inside a UTF-8 character or a CRLF) and returns the events
    /// they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        self.feed(bytes, |event| events.push(event));
        events
    }

    /// As [`push`](Self::push), handing each completed event to `emit`.
    pub fn feed(&mut self, mut bytes: &[u8], mut emit: impl FnMut(SseEvent)) {
        if bytes.is_empty() {
            return;
        }
        if !self.started {
            let bom = [0xEF, 0xBB, 0xBF];
            let seen = self.pending.len() + bytes.len();
            if seen < bom.len() && bom.starts_with(&[&self.pending[..], bytes].concat()) {
                self.pending.extend_from_slice(bytes);
                return;
            }
            self.started = true;
            let mut head = std::mem::take(&mut self.pending);
            head.extend_from_slice(bytes);
            let rest = head.strip_prefix(&bom[..]).unwrap_or(&head);
            self.feed_lines(rest, &mut emit);
            return;
        }
        if self.after_cr && bytes.first() == Some(&b'\n') {
            bytes = &bytes[1..];
        }
        self.feed_lines(bytes, &mut emit);
    }

    /// Bytes held for the event not yet complete: its data so far and the line not yet ended
    /// (what a reader bounds, so that an endless event cannot grow it without end).
    pub fn unfinished_len(&self) -> usize {
        self.pending.len() + self.fields.data.len()
    }

    fn feed_lines(&mut self, bytes: &[u8], emit: &mut impl FnMut(SseEvent)) {
        self.after_cr = false;
        let mut start = 0;
        while let Some(offset) = bytes[start..].iter().position(|&b| b == b'\n' || b == b'\r') {
            let end = start + offset;
            let line = &bytes[start..end];
            start = end + 1;
            if bytes[end] == b'\r' {
                match bytes.get(start) {
                    Some(b'\n') => start += 1,
                    Some(_) => {}
                    // The CR is the last byte: a LF at the start of the next read belongs to it.
                    None => self.after_cr = true,
                }
            }
            if self.pending.is_empty() {
                self.fields.line(&decode(line), emit);
            } else {
                // The line began in an earlier read.
                let mut joined = std::mem::take(&mut self.pending);
                joined.extend_from_slice(line);
                self.fields.line(&decode(&joined), emit);
                joined.clear();
                self.pending = joined;
            }
        }
        self.pending.extend_from_slice(&bytes[start..]);
    }
}

/// UTF-8 with U+FFFD for what is not; checked with the fast validator first, as nearly every
/// line is valid.
fn decode(line: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(line) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(line),
    }
}

impl Fields {
    fn line(&mut self, line: &str, emit: &mut impl FnMut(SseEvent)) {
        if line.is_empty() {
            if self.has_data {
                emit(SseEvent {
                    event: self.event.take(),
                    data: std::mem::take(&mut self.data),
                    id: self.last_id.clone(),
                });
            }
            self.event = None;
            self.has_data = false;
            return;
        }
        if line.starts_with(':') {
            return; // a comment: a heartbeat
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = (!value.is_empty()).then(|| value.to_owned()),
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(data: &str) -> SseEvent {
        SseEvent { event: Some("error".into()), data: data.into(), id: None }
    }

    #[test]
    fn what_is_held_for_an_unfinished_event_is_counted_across_lines_and_reads() {
        let mut parser = SseParser::default();
        assert!(parser.push(b"data: abc\ndata: de").is_empty());
        // The data so far ("abc") and the line not yet ended.
        assert_eq!(parser.unfinished_len(), "abc".len() + "data: de".len());
        assert!(parser.push(b"f\n").is_empty());
        assert_eq!(parser.unfinished_len(), "abc\ndef".len());
        // The end of one event and the start of the next in one read: only the next is held.
        assert_eq!(parser.push(b"\ndata: xy").len(), 1);
        assert_eq!(parser.unfinished_len(), "data: xy".len());
    }

    /// Every way of cutting `stream` into two reads gives `expected`.
    fn assert_any_split(stream: &[u8], expected: &[SseEvent]) {
        for split in 0..=stream.len() {
            let mut parser = SseParser::default();
            let mut events = parser.push(&stream[..split]);
            events.extend(parser.push(&stream[split..]));
            assert_eq!(events, expected, "split at {split}");
        }
    }

    #[test]
    fn events_split_anywhere_come_out_whole() {
        let stream =
            "data: {\"a\":\"é\"}\n\n: heartbeat\n\nevent: error\ndata: x\r\n\r\ndata: [DONE]\n\n";
        let expected =
            [SseEvent::message("{\"a\":\"é\"}"), error("x"), SseEvent::message("[DONE]")];
        assert_any_split(stream.as_bytes(), &expected);
    }

    #[test]
    fn lone_carriage_returns_end_lines_too() {
        assert_any_split(
            b"data: a\r\rdata: b\r\n\r\n",
            &[SseEvent::message("a"), SseEvent::message("b")],
        );
        // A CR then a LF in the next read is one line ending, not two.
        let mut parser = SseParser::default();
        assert!(parser.push(b"data: a\r").is_empty());
        assert!(parser.push(b"\ndata: b\r").is_empty());
        assert_eq!(parser.push(b"\n\r\n"), [SseEvent::message("a\nb")]);
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        let mut parser = SseParser::default();
        assert_eq!(parser.push(b"data: a\ndata:b\ndata\n\n"), [SseEvent::message("a\nb\n")]);
    }

    #[test]
    fn a_byte_order_mark_at_the_start_is_skipped_even_when_split() {
        assert_any_split(b"\xEF\xBB\xBFdata: a\n\n", &[SseEvent::message("a")]);
        let mut parser = SseParser::default();
        for byte in b"\xEF\xBB\xBFdata: b\n\n" {
            let events = parser.push(&[*byte]);
            if *byte == b'\n' && !events.is_empty() {
                assert_eq!(events, [SseEvent::message("b")]);
            }
        }
    }

    #[test]
    fn an_unfinished_event_waits_for_its_blank_line_and_an_empty_one_is_not_sent() {
        let mut parser = SseParser::default();
        assert!(parser.push(b"data: a\n").is_empty());
        assert_eq!(parser.push(b"\n"), [SseEvent::message("a")]);
        assert!(parser.push(b"event: x\nid: 7\nretry: 5\n\n").is_empty());
        // The type does not carry over to the next event; the last event ID does.
        let seven = SseEvent { id: Some("7".into()), ..SseEvent::message("") };
        assert_eq!(parser.push(b"event:\ndata\n\n"), [seven]);
    }

    #[test]
    fn a_stream_fed_one_byte_at_a_time_parses_the_same() {
        let stream = "event: message\ndata: {\"x\":\"日本\"}\n\ndata: [DONE]\n\n";
        let mut parser = SseParser::default();
        let events: Vec<_> = stream.as_bytes().iter().flat_map(|b| parser.push(&[*b])).collect();
        let message =
            SseEvent { event: Some("message".into()), data: "{\"x\":\"日本\"}".into(), id: None };
        assert_eq!(events, [message, SseEvent::message("[DONE]")]);
    }

    #[test]
    fn each_event_carries_the_last_event_id_until_another_is_set() {
        let mut parser = SseParser::default();
        let events =
            parser.push(b"id: 1\ndata: a\n\ndata: b\n\nid: 3\ndata: c\n\nid: x\0\ndata: d\n\n");
        let ids: Vec<_> = events.iter().map(|e| e.id.as_deref()).collect();
        assert_eq!(ids, [Some("1"), Some("1"), Some("3"), Some("3")]);
    }

    #[test]
    fn bytes_that_are_not_utf8_become_replacement_characters() {
        let mut parser = SseParser::default();
        assert_eq!(parser.push(b"data: a\xFFb\n\n"), [SseEvent::message("a\u{FFFD}b")]);
    }
}
