//! Reading a relay stream the way a client does: through a real SSE parser, with a time bound.

use eventsource_stream::{Event, Eventsource};
use futures_util::StreamExt;

use crate::WAIT;

/// Every event of the response, in order, until the server ends the body.
pub async fn read_events(response: reqwest::Response) -> Vec<Event> {
    let mut events = response.bytes_stream().eventsource();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, async {
        while let Some(event) = events.next().await {
            out.push(event.expect("the relay's stream is well-formed SSE"));
        }
    })
    .await
    .expect("the stream did not end in time");
    out
}

/// The raw bytes of the response body (to see SSE comments, which parsers drop).
pub async fn read_raw(response: reqwest::Response) -> String {
    let bytes = tokio::time::timeout(WAIT, response.bytes())
        .await
        .expect("the body did not end in time")
        .expect("the body could be read");
    String::from_utf8(bytes.to_vec()).expect("the body is UTF-8")
}
