//! Property tests of the SSE parser: however a stream is cut into reads (inside a line, a CRLF, a
//! UTF-8 character or the byte-order mark), the events that come out are the ones the whole
//! stream gives at once, and for a stream written from known events, those events.

use confab_protocol::sse::{SseEvent, SseParser};
use proptest::prelude::*;

/// One event as a server writes it, with the noise a stream may carry between its lines.
#[derive(Debug, Clone)]
struct WrittenEvent {
    /// The `event` field's value, if the server names the type.
    name: Option<String>,
    /// The `data` lines (none: an event that is never dispatched).
    data: Vec<String>,
    /// A comment (heartbeat) and an `id` field among the lines.
    comment: bool,
    id: bool,
}

/// Text a field value may hold: anything but line endings, with some of the characters the
/// parser treats specially (`:`, leading spaces) and some that are not ASCII.
fn field_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            4 => proptest::char::range('a', 'z'),
            1 => Just(':'),
            1 => Just(' '),
            1 => Just('é'),
            1 => Just('日'),
            1 => Just('\u{FEFF}'),
            1 => any::<char>().prop_filter("no line endings", |c| *c != '\r' && *c != '\n'),
        ],
        0..12,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn written_event() -> impl Strategy<Value = WrittenEvent> {
    (
        proptest::option::of(field_text()),
        proptest::collection::vec(field_text(), 0..4),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(name, data, comment, id)| WrittenEvent { name, data, comment, id })
}

/// The stream's lines for `events` (each event ends with a blank line).
fn lines(events: &[WrittenEvent]) -> Vec<String> {
    let mut lines = Vec::new();
    for event in events {
        if event.comment {
            lines.push(": keep-alive".to_owned());
        }
        if let Some(name) = &event.name {
            lines.push(format!("event: {name}"));
        }
        if event.id {
            lines.push("id: 7".to_owned());
        }
        lines.extend(event.data.iter().map(|data| format!("data: {data}")));
        lines.push(String::new());
    }
    lines
}

/// What a reader must see: events with data, typed by a non-empty `event` value, each with the
/// last event ID set so far (by it or by an event before it, dispatched or not).
fn expected(events: &[WrittenEvent]) -> Vec<SseEvent> {
    let mut last_id = None;
    events
        .iter()
        .filter_map(|event| {
            if event.id {
                last_id = Some("7".to_owned());
            }
            (!event.data.is_empty()).then(|| SseEvent {
                event: event.name.clone().filter(|name| !name.is_empty()),
                data: event.data.join("\n"),
                id: last_id.clone(),
            })
        })
        .collect()
}

/// Joins `lines` with the chosen endings (LF, CRLF or a lone CR, cycling through `endings`). A
/// lone CR followed by an empty line ended with LF would read as one CRLF, so that empty line
/// gets a CRLF instead: the stream then means what it was written to mean.
fn encode(lines: &[String], endings: &[u8], bom: bool) -> Vec<u8> {
    let mut bytes = Vec::new();
    if bom {
        bytes.extend_from_slice(b"\xEF\xBB\xBF");
    }
    let mut after_cr = false;
    for (i, line) in lines.iter().enumerate() {
        bytes.extend_from_slice(line.as_bytes());
        let mut ending: &[u8] = match endings.get(i % endings.len().max(1)).copied().unwrap_or(0) {
            0 => b"\n",
            1 => b"\r\n",
            _ => b"\r",
        };
        if after_cr && line.is_empty() && ending == b"\n" {
            ending = b"\r\n";
        }
        bytes.extend_from_slice(ending);
        after_cr = ending == b"\r";
    }
    bytes
}

/// Cuts `bytes` at the given points (taken modulo its length, in order).
fn pieces<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|cut| cut % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut pieces = Vec::with_capacity(points.len() + 1);
    let mut start = 0;
    for point in points {
        pieces.push(&bytes[start..point]);
        start = point;
    }
    pieces.push(&bytes[start..]);
    pieces
}

fn parse_whole(bytes: &[u8]) -> Vec<SseEvent> {
    SseParser::default().push(bytes)
}

fn parse_in_pieces(pieces: &[&[u8]]) -> Vec<SseEvent> {
    let mut parser = SseParser::default();
    let mut events = Vec::new();
    for piece in pieces {
        parser.feed(piece, |event| events.push(event));
    }
    events
}

/// Bytes that look like SSE more often than random bytes do: field names, line endings, pieces
/// of the byte-order mark and of multi-byte characters, and any byte at all.
fn stream_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop_oneof![
        Just(b"data: ".to_vec()),
        Just(b"data:".to_vec()),
        Just(b"data".to_vec()),
        Just(b"event: error".to_vec()),
        Just(b": comment".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just(b"\xEF\xBB".to_vec()),
        Just("é日".as_bytes().to_vec()),
        Just(b"\xE6\x97".to_vec()),
        proptest::collection::vec(any::<u8>(), 1..4),
    ];
    proptest::collection::vec(fragment, 0..40).prop_map(|fragments| fragments.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_valid_stream_cut_anywhere_gives_the_events_it_was_written_from(
        events in proptest::collection::vec(written_event(), 0..6),
        endings in proptest::collection::vec(0u8..3, 1..8),
        bom in any::<bool>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let bytes = encode(&lines(&events), &endings, bom);
        let whole = parse_whole(&bytes);
        prop_assert_eq!(&whole, &expected(&events));
        prop_assert_eq!(parse_in_pieces(&pieces(&bytes, &cuts)), whole);
    }

    #[test]
    fn a_valid_stream_fed_one_byte_at_a_time_gives_the_same_events(
        events in proptest::collection::vec(written_event(), 0..4),
        endings in proptest::collection::vec(0u8..3, 1..4),
        bom in any::<bool>(),
    ) {
        let bytes = encode(&lines(&events), &endings, bom);
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(parse_in_pieces(&bytewise), parse_whole(&bytes));
    }

    #[test]
    fn any_bytes_cut_anywhere_give_the_same_events_as_whole(
        bytes in stream_like_bytes(),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        prop_assert_eq!(parse_in_pieces(&pieces(&bytes, &cuts)), parse_whole(&bytes));
    }
}
