//! An incremental Server-Sent Events parser: bytes in as they arrive from `fetch`, complete
//! events out. Hand-written (about 60 lines) because an SSE crate would bring its own stream
//! machinery into the wasm module, and every kilobyte ships to every visitor.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `message` unless the stream named another type (`error` for a failed answer).
    pub event: String,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseParser {
    pending: Vec<u8>,
    event: String,
    data: String,
    has_data: bool,
}

impl SseParser {
    /// Feeds bytes (any split, even inside a UTF-8 character) and returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(offset) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + offset;
            let mut line = &self.pending[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            self.line(&line, &mut events);
        }
        self.pending.drain(..start);
        events
    }

    fn line(&mut self, line: &str, events: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if self.has_data {
                let event = std::mem::take(&mut self.event);
                events.push(SseEvent {
                    event: if event.is_empty() { "message".into() } else { event },
                    data: std::mem::take(&mut self.data),
                });
            }
            self.event.clear();
            self.has_data = false;
            return;
        }
        if line.starts_with(':') {
            return; // a comment: the relay's heartbeat
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
            "event" => value.clone_into(&mut self.event),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn message(data: &str) -> SseEvent {
        SseEvent { event: "message".into(), data: data.into() }
    }

    // Natively under `cargo test`, and in headless Chromium under wasm-bindgen-test.
    #[wasm_bindgen_test(unsupported = test)]
    fn events_split_anywhere_come_out_whole() {
        let stream =
            "data: {\"a\":\"é\"}\n\n: heartbeat\n\nevent: error\ndata: x\r\n\r\ndata: [DONE]\n\n";
        let bytes = stream.as_bytes();
        for split in 0..bytes.len() {
            let mut parser = SseParser::default();
            let mut events = parser.push(&bytes[..split]);
            events.extend(parser.push(&bytes[split..]));
            assert_eq!(
                events,
                vec![
                    message("{\"a\":\"é\"}"),
                    SseEvent { event: "error".into(), data: "x".into() },
                    message("[DONE]"),
                ],
                "split at {split}"
            );
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn multi_line_data_is_joined_with_newlines() {
        let mut parser = SseParser::default();
        assert_eq!(parser.push(b"data: a\ndata:b\n\n"), vec![message("a\nb")]);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn an_unfinished_event_waits_for_its_blank_line() {
        let mut parser = SseParser::default();
        assert!(parser.push(b"data: a\n").is_empty());
        assert_eq!(parser.push(b"\n"), vec![message("a")]);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_stream_fed_one_byte_at_a_time_parses_the_same() {
        let stream = "event: message\ndata: {\"x\":\"日本\"}\n\ndata: [DONE]\n\n";
        let mut parser = SseParser::default();
        let events: Vec<_> = stream.as_bytes().iter().flat_map(|b| parser.push(&[*b])).collect();
        assert_eq!(events, vec![message("{\"x\":\"日本\"}"), message("[DONE]")]);
    }
}
