//! The HTTP/1.1 client for upstream calls: keep-alive connections (TLS or not) to one origin,
//! a request written in one go, and the answer's body read in the caller's own task.
//!
//! Hand-written on purpose. With reqwest (hyper's pooled client underneath) every connection is
//! driven by a task of its own that hands the body over one chunked-encoding frame at a time
//! through a channel, so each of a stream's events cost two task wake-ups, often across threads;
//! and reqwest parses the URL again on every response. Measured on a proxy that did nothing else
//! (`bench/relay`'s stack proxy, BENCHMARKS.md), that was three to four times nginx's CPU per
//! streamed request before the relay did any work of its own. Here one read of the socket gives
//! every event that arrived with it. What is not hand-written: the response head is parsed by
//! `httparse` (hyper's own parser) and TLS is rustls with the platform's trust store, as
//! reqwest configured it.
//!
//! What it does not do, because upstream calls do not need it: HTTP/2, redirects, proxies,
//! compression, request bodies of unknown length.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::Sent;

/// A response head larger than this is refused.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Headers read from a response head, at most.
const MAX_HEADERS: usize = 64;
/// A chunk-size or trailer line longer than this is refused.
const MAX_LINE_BYTES: usize = 4096;
/// What a read asks the socket for at first. Small on purpose: an open stream holds its buffer
/// between events, and events are a few hundred bytes each. A read that fills it doubles the
/// next one, up to `MAX_READ_BYTES`, for bursts and whole answers.
const READ_BYTES: usize = 1024;
const MAX_READ_BYTES: usize = 64 * 1024;
/// Idle connections kept per upstream.
const MAX_IDLE: usize = 256;

/// Why a call failed, in the terms the relay reports upstream failures in.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// DNS, TCP or TLS: no connection was made.
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    #[error("connecting took longer than {0:?}")]
    ConnectTimeout(Duration),
    /// The connection failed or closed before the answer was complete.
    #[error("connection lost: {0}")]
    Closed(io::Error),
    /// The upstream sent something that is not HTTP/1.1.
    #[error("invalid response: {0}")]
    Invalid(String),
}

/// Where a client connects, parsed once from the upstream's base URL.
#[derive(Debug, Clone)]
struct Origin {
    /// What to connect to: a name, or an address without brackets.
    host: String,
    port: u16,
    /// `Host` header value.
    authority: String,
    /// Set for `https`.
    tls: Option<ServerName<'static>>,
}

/// Keep-alive connections to one origin. Cheap to share: calls take and return connections.
pub struct Client {
    origin: Origin,
    tls: Option<TlsConnector>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    idle: Mutex<Vec<(Conn, Instant)>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("origin", &self.origin.authority).finish_non_exhaustive()
    }
}

/// The body of a request: its bytes and the headers that go with them.
pub struct Request<'a> {
    /// Path and query, starting with `/`.
    pub path: &'a str,
    /// `(name, value)` pairs; `Host`, `Content-Length` are added.
    pub headers: &'a [(&'a str, &'a [u8])],
    pub body: &'a [u8],
}

impl std::fmt::Debug for Request<'_> {
    /// Header values are left out: one of them is the upstream's key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| *name).collect();
        f.debug_struct("Request")
            .field("path", &self.path)
            .field("headers", &names)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl Client {
    /// A client for `url`'s origin (`http` or `https`), trusting the platform's certificate
    /// authorities for `https`. Builds the TLS configuration once.
    pub fn new(
        url: &url::Url,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Result<Self, String> {
        let tls = if url.scheme() == "https" {
            use rustls_platform_verifier::ConfigVerifierExt as _;
            let config = ClientConfig::with_platform_verifier()
                .map_err(|e| format!("cannot set up TLS: {e}"))?;
            Some(config)
        } else {
            None
        };
        Self::with_tls(url, tls, connect_timeout, idle_timeout)
    }

    fn with_tls(
        url: &url::Url,
        tls: Option<ClientConfig>,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Result<Self, String> {
        let host = url.host_str().ok_or("the URL has no host")?.to_owned();
        // `[::1]` in a URL is `::1` to connect to and as a TLS server name.
        let bare = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            other => return Err(format!("unsupported scheme `{other}`")),
        };
        let port = url.port_or_known_default().ok_or("the URL has no port")?;
        let default_port = if https { 443 } else { 80 };
        let authority = match url.port() {
            Some(port) if port != default_port => format!("{host}:{port}"),
            _ => host.clone(),
        };
        let (tls, server_name) = match tls {
            Some(mut config) if https => {
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                let name =
                    ServerName::try_from(bare.clone()).map_err(|e| format!("invalid host: {e}"))?;
                (Some(TlsConnector::from(Arc::new(config))), Some(name))
            }
            None if https => return Err("https needs a TLS configuration".into()),
            _ => (None, None),
        };
        Ok(Self {
            origin: Origin { host: bare, port, authority, tls: server_name },
            tls,
            connect_timeout,
            idle_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends `request` as a `POST` and reads the response head. A reused connection the
    /// upstream had closed meanwhile is replaced by a new one only if the request could not be
    /// written on it: once it was, the upstream may be working on it, and a chat request must
    /// never run twice. (Closed idle connections are found before use, by `looks_open`.)
    #[cfg(test)]
    pub async fn post(self: &Arc<Self>, request: &Request<'_>) -> Result<Response, Error> {
        self.post_marking_sent(request, None).await
    }

    /// [`Client::post`], marking `sent` once the request is written: from then on the upstream
    /// may be working on it (and billing it), whatever happens to the answer.
    pub async fn post_marking_sent(
        self: &Arc<Self>,
        request: &Request<'_>,
        sent: Option<&Sent>,
    ) -> Result<Response, Error> {
        let bytes = self.request_bytes(request);
        if let Some(conn) = self.checkout() {
            match self.exchange(conn, &bytes, sent).await {
                Ok(response) => return Ok(response),
                Err(Exchange::Stale) => {}
                Err(Exchange::Failed(error)) => return Err(error),
            }
        }
        let conn = self.connect().await?;
        match self.exchange(conn, &bytes, sent).await {
            Ok(response) => Ok(response),
            Err(Exchange::Stale) => Err(Error::Closed(io::ErrorKind::UnexpectedEof.into())),
            Err(Exchange::Failed(error)) => Err(error),
        }
    }

    /// The request as written: head and body in one buffer, for one write.
    fn request_bytes(&self, request: &Request<'_>) -> Vec<u8> {
        let mut head = Vec::with_capacity(256 + request.body.len());
        head.extend_from_slice(b"POST ");
        head.extend_from_slice(request.path.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        head.extend_from_slice(self.origin.authority.as_bytes());
        head.extend_from_slice(b"\r\nContent-Length: ");
        head.extend_from_slice(request.body.len().to_string().as_bytes());
        for (name, value) in request.headers {
            head.extend_from_slice(b"\r\n");
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value);
        }
        head.extend_from_slice(b"\r\n\r\n");
        head.extend_from_slice(request.body);
        head
    }

    async fn exchange(
        self: &Arc<Self>,
        mut conn: Conn,
        request: &[u8],
        mark: Option<&Sent>,
    ) -> Result<Response, Exchange> {
        let reused = conn.reused;
        let sent = async {
            conn.io.write_all(request).await?;
            conn.io.flush().await
        }
        .await;
        if let Err(error) = sent {
            return Err(if reused {
                Exchange::Stale
            } else {
                Exchange::Failed(Error::Closed(error))
            });
        }
        if let Some(mark) = mark {
            mark.mark();
        }
        let head = match conn.read_head().await {
            Ok(head) => head,
            Err(HeadError::Io(error)) => return Err(Exchange::Failed(Error::Closed(error))),
            Err(HeadError::Invalid(problem)) => {
                return Err(Exchange::Failed(Error::Invalid(problem)));
            }
        };
        let decoder = match head.framing {
            Framing::Empty => Decoder::Done,
            Framing::Length(0) => Decoder::Done,
            Framing::Length(length) => Decoder::Length(length),
            Framing::Chunked => Decoder::Chunked(Chunked::Size),
            Framing::UntilClose => Decoder::UntilClose,
        };
        let mut body =
            Body { conn: Some(conn), decoder, reusable: head.keep_alive, client: Arc::clone(self) };
        if matches!(body.decoder, Decoder::Done) {
            body.finish();
        }
        Ok(Response { status: head.status, retry_after: head.retry_after, body })
    }

    /// The most recently used idle connection that is still open, if any.
    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some((mut conn, since)) = idle.pop() {
            if since.elapsed() < self.idle_timeout && conn.looks_open() {
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    }

    fn checkin(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push((conn, Instant::now()));
    }

    async fn connect(&self) -> Result<Conn, Error> {
        let connect = async {
            let tcp = TcpStream::connect((self.origin.host.as_str(), self.origin.port))
                .await
                .map_err(Error::Connect)?;
            tcp.set_nodelay(true).map_err(Error::Connect)?;
            let io = match (&self.tls, &self.origin.tls) {
                (Some(tls), Some(name)) => Stream::Tls(Box::new(
                    tls.connect(name.clone(), tcp).await.map_err(Error::Connect)?,
                )),
                _ => Stream::Plain(tcp),
            };
            Ok(Conn { io, buf: BytesMut::new(), read_size: READ_BYTES, reused: false })
        };
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .unwrap_or(Err(Error::ConnectTimeout(self.connect_timeout)))
    }
}

enum Exchange {
    /// A reused connection turned out closed before the upstream saw the request.
    Stale,
    Failed(Error),
}

/// A connection to an upstream, with or without TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

struct Conn {
    io: Stream,
    /// Bytes read and not yet used.
    buf: BytesMut,
    /// What the next read asks for.
    read_size: usize,
    reused: bool,
}

enum HeadError {
    Io(io::Error),
    Invalid(String),
}

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

#[derive(Debug)]
struct Head {
    status: u16,
    retry_after: Option<String>,
    framing: Framing,
    keep_alive: bool,
}

impl Conn {
    /// Reads one more piece from the socket into `buf`; `Ok(0)` at the end of the stream.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.read_size == READ_BYTES && self.buf.is_empty() {
            // A small read takes a small buffer: an empty one would otherwise reuse whatever
            // the last burst made it grow to, and keep it for the life of the stream.
            self.buf = BytesMut::new();
        }
        self.buf.reserve(self.read_size);
        let read = self.io.read_buf(&mut self.buf).await?;
        self.read_size = if read >= self.read_size {
            (self.read_size * 2).min(MAX_READ_BYTES)
        } else {
            READ_BYTES
        };
        Ok(read)
    }

    async fn read_head(&mut self) -> Result<Head, HeadError> {
        let mut interim = 0;
        loop {
            if !self.buf.is_empty() {
                match parse_head(&self.buf) {
                    Ok(Some((head, length))) => {
                        self.buf.advance(length);
                        // `101 Switching Protocols` would hand the connection to another
                        // protocol: never asked for, so never accepted.
                        if head.status == 101 {
                            return Err(HeadError::Invalid("unexpected 101 response".into()));
                        }
                        // Other 1xx answers (100 Continue, 103 Early Hints) come before the real
                        // one; a few at most, so an upstream cannot keep the call waiting with
                        // an endless series of them.
                        if (100..200).contains(&head.status) {
                            interim += 1;
                            if interim > MAX_INTERIM_HEADS {
                                return Err(HeadError::Invalid(
                                    "too many interim (1xx) responses".into(),
                                ));
                            }
                            continue;
                        }
                        return Ok(head);
                    }
                    Ok(None) if self.buf.len() > MAX_HEAD_BYTES => {
                        return Err(HeadError::Invalid("response head too large".into()));
                    }
                    Ok(None) => {}
                    Err(problem) => return Err(HeadError::Invalid(problem)),
                }
            }
            match self.fill().await {
                Ok(0) => return Err(HeadError::Io(io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => {}
                Err(error) => return Err(HeadError::Io(error)),
            }
        }
    }

    /// Whether an idle connection is still open: the upstream has neither closed it nor sent
    /// anything unasked (which would make the next answer unreadable). Asks the socket itself
    /// (a non-blocking peek), not the runtime's record of its readiness, which may not have
    /// seen a close that just arrived.
    fn looks_open(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let tcp = match &self.io {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref().0,
        };
        let mut probe = [std::mem::MaybeUninit::uninit(); 1];
        let quiet = matches!(
            socket2::SockRef::from(tcp).peek(&mut probe),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock
        );
        // TLS may hold data it already took off the socket.
        let mut byte = [0u8; 1];
        let mut read = tokio::io::ReadBuf::new(&mut byte);
        let mut context = Context::from_waker(std::task::Waker::noop());
        quiet && Pin::new(&mut self.io).poll_read(&mut context, &mut read).is_pending()
    }
}

/// Interim (1xx) heads accepted before the real answer.
const MAX_INTERIM_HEADS: usize = 4;

/// Parses a response head; `Ok(None)` if it is not complete yet.
fn parse_head(bytes: &[u8]) -> Result<Option<(Head, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let length = match response.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(format!("cannot parse the response head: {error}")),
    };
    let status = response.code.ok_or("no status code")?;
    let mut keep_alive = response.version == Some(1);
    let mut chunked = false;
    let mut other_coding = false;
    let mut content_length: Option<u64> = None;
    let mut retry_after = None;
    for header in response.headers.iter() {
        let value = std::str::from_utf8(header.value).unwrap_or_default().trim();
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding decides; anything but chunked is read until the connection ends.
            let last = value.rsplit(',').next().unwrap_or_default().trim();
            chunked = last.eq_ignore_ascii_case("chunked");
            other_coding = !chunked;
        } else if header.name.eq_ignore_ascii_case("content-length") {
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err("invalid Content-Length".into());
            }
            let length = value.parse::<u64>().map_err(|_| "invalid Content-Length")?;
            if content_length.is_some_and(|seen| seen != length) {
                return Err("conflicting Content-Length headers".into());
            }
            content_length = Some(length);
        } else if header.name.eq_ignore_ascii_case("connection") {
            for option in value.split(',') {
                let option = option.trim();
                if option.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if option.eq_ignore_ascii_case("keep-alive") && response.version == Some(0) {
                    keep_alive = true;
                }
            }
        } else if header.name.eq_ignore_ascii_case("retry-after") {
            retry_after = Some(value.to_owned());
        }
    }
    let framing = if status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::Empty
    } else if chunked {
        // With a Content-Length too, the message is suspect (RFC 9112 §6.3): read it by its
        // chunks, but do not reuse the connection.
        if content_length.is_some() {
            keep_alive = false;
        }
        Framing::Chunked
    } else if other_coding {
        keep_alive = false;
        Framing::UntilClose
    } else if let Some(length) = content_length {
        Framing::Length(length)
    } else {
        keep_alive = false;
        Framing::UntilClose
    };
    Ok(Some((Head { status, retry_after, framing, keep_alive }, length)))
}

/// An answer: its status, the one header the relay reads, and its body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Body,
}

/// The body of an answer, read in the caller's task. Read to its end, its connection goes back
/// to the client for the next call; dropped before, the connection is closed (which is how an
/// upstream call is cancelled).
pub struct Body {
    conn: Option<Conn>,
    decoder: Decoder,
    reusable: bool,
    client: Arc<Client>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body").field("decoder", &self.decoder).finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum Decoder {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    Done,
    /// The framing broke: the body can never end, so its connection is never reused, however
    /// often it is read again.
    Failed,
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk, with this many bytes to go.
    Data(u64),
    /// At the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

impl Body {
    /// The body bytes that are available now, waiting for the socket only when none are:
    /// everything that one read brought, whatever its framing. `None` at the end.
    pub async fn read(&mut self) -> Result<Option<Bytes>, Error> {
        loop {
            let Some(conn) = self.conn.as_mut() else { return Ok(None) };
            let mut out = BytesMut::new();
            let done = decode(&mut self.decoder, &mut conn.buf, &mut out)?;
            if done {
                self.finish();
            }
            if !out.is_empty() {
                return Ok(Some(out.freeze()));
            }
            if done {
                return Ok(None);
            }
            let Some(conn) = self.conn.as_mut() else { return Ok(None) };
            match conn.fill().await {
                Ok(0) if matches!(self.decoder, Decoder::UntilClose) => {
                    self.decoder = Decoder::Done;
                    self.reusable = false;
                    self.finish();
                    return Ok(None);
                }
                Ok(0) => return Err(Error::Closed(io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => {}
                Err(error) => return Err(Error::Closed(error)),
            }
        }
    }

    /// The whole body, refused past `limit` bytes.
    pub async fn read_all(&mut self, limit: usize) -> Result<Bytes, ReadAllError> {
        let mut all = BytesMut::new();
        while let Some(piece) = self.read().await.map_err(ReadAllError::Read)? {
            if all.len() + piece.len() > limit {
                return Err(ReadAllError::TooLarge);
            }
            if all.is_empty() {
                all = BytesMut::from(piece);
            } else {
                all.extend_from_slice(&piece);
            }
        }
        Ok(all.freeze())
    }

    /// Reads what is left of the body in the background, for at most `limit`, so that its
    /// connection can be reused; for an answer whose content the caller already has (an SSE
    /// stream after `[DONE]`). Never for a call being cancelled: that closes the connection.
    pub fn finish_in_background(mut self, limit: Duration) {
        if self.conn.is_none() {
            return;
        }
        tokio::spawn(async move {
            let drain = async { while let Ok(Some(_)) = self.read().await {} };
            let _ = tokio::time::timeout(limit, drain).await;
        });
    }

    /// The body ended: its connection goes back for reuse if the answer allowed it.
    fn finish(&mut self) {
        self.decoder = Decoder::Done;
        if let Some(conn) = self.conn.take()
            && self.reusable
            && conn.buf.is_empty()
        {
            self.client.checkin(conn);
        }
    }
}

/// Why `read_all` failed.
#[derive(Debug)]
pub enum ReadAllError {
    Read(Error),
    TooLarge,
}

/// Moves the body bytes in `input` to `out`, leaving what belongs to a later read; `true` once
/// the body has ended.
fn decode(decoder: &mut Decoder, input: &mut BytesMut, out: &mut BytesMut) -> Result<bool, Error> {
    match decode_more(decoder, input, out) {
        Ok(done) => {
            if done {
                *decoder = Decoder::Done;
            }
            Ok(done)
        }
        Err(error) => {
            // Whatever follows cannot be trusted to be this body's: a read after the error must
            // not find a clean end in it and hand the connection back.
            *decoder = Decoder::Failed;
            Err(error)
        }
    }
}

fn decode_more(
    decoder: &mut Decoder,
    input: &mut BytesMut,
    out: &mut BytesMut,
) -> Result<bool, Error> {
    match decoder {
        Decoder::Done => Ok(true),
        Decoder::Failed => Err(Error::Invalid("the body's framing broke earlier".into())),
        Decoder::UntilClose => {
            out.extend_from_slice(&input.split());
            Ok(false)
        }
        Decoder::Length(remaining) => {
            let take = usize::try_from(*remaining).unwrap_or(usize::MAX).min(input.len());
            take_into(out, input, take);
            *remaining -= take as u64;
            Ok(*remaining == 0)
        }
        Decoder::Chunked(state) => loop {
            match *state {
                Chunked::Size => {
                    let Some(line) = take_line(input)? else { return Ok(false) };
                    let size = parse_chunk_size(&line)?;
                    *state = if size == 0 { Chunked::Trailers } else { Chunked::Data(size) };
                }
                Chunked::Data(remaining) => {
                    let take = usize::try_from(remaining).unwrap_or(usize::MAX).min(input.len());
                    if take == 0 {
                        return Ok(false);
                    }
                    take_into(out, input, take);
                    let left = remaining - take as u64;
                    *state = if left == 0 { Chunked::DataEnd } else { Chunked::Data(left) };
                }
                Chunked::DataEnd => {
                    let Some(line) = take_line(input)? else { return Ok(false) };
                    if !line.is_empty() {
                        return Err(Error::Invalid("chunk data longer than its size".into()));
                    }
                    *state = Chunked::Size;
                }
                Chunked::Trailers => {
                    let Some(line) = take_line(input)? else { return Ok(false) };
                    if line.is_empty() {
                        return Ok(true);
                    }
                }
            }
        },
    }
}

/// Appends the first `count` bytes of `input` to `out` (without copying when `out` is empty).
fn take_into(out: &mut BytesMut, input: &mut BytesMut, count: usize) {
    let piece = input.split_to(count);
    if out.is_empty() {
        *out = piece;
    } else {
        out.extend_from_slice(&piece);
    }
}

/// The next line of `input` without its line ending (CRLF, or a lone LF as RFC 9112 allows
/// recipients to accept); `None` if it has not fully arrived.
fn take_line(input: &mut BytesMut) -> Result<Option<BytesMut>, Error> {
    let Some(end) = input.iter().position(|&b| b == b'\n') else {
        if input.len() > MAX_LINE_BYTES {
            return Err(Error::Invalid("chunk line too long".into()));
        }
        return Ok(None);
    };
    let mut line = input.split_to(end + 1);
    line.truncate(end);
    if line.last() == Some(&b'\r') {
        line.truncate(end - 1);
    }
    Ok(Some(line))
}

/// A chunk-size line: hex digits, then optional whitespace and `;extensions`.
fn parse_chunk_size(line: &[u8]) -> Result<u64, Error> {
    let invalid = || Error::Invalid("invalid chunk size".into());
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    // After the digits: optional whitespace, then nothing or `;extensions`.
    let rest = line[digits..].trim_ascii_start();
    if digits == 0 || !matches!(rest.first(), None | Some(b';')) {
        return Err(invalid());
    }
    let significant = &line[..digits].trim_ascii_start();
    let significant = match significant.iter().position(|&b| b != b'0') {
        Some(first) => &significant[first..],
        None => return Ok(0),
    };
    if significant.len() > 15 {
        return Err(invalid());
    }
    let text = std::str::from_utf8(significant).map_err(|_| invalid())?;
    u64::from_str_radix(text, 16).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(decoder: &mut Decoder, pieces: &[&[u8]]) -> Result<(Vec<u8>, bool), Error> {
        let mut input = BytesMut::new();
        let mut body = Vec::new();
        let mut done = false;
        for piece in pieces {
            input.extend_from_slice(piece);
            let mut out = BytesMut::new();
            done = decode(decoder, &mut input, &mut out)?;
            body.extend_from_slice(&out);
        }
        Ok((body, done))
    }

    #[test]
    fn a_chunked_body_decodes_the_same_however_it_is_cut() {
        let wire: &[u8] =
            b"5\r\nhello\r\n7;ext=1\r\n, world\r\n1 \r\n!\r\n0\r\nX-Trailer: yes\r\n\r\nNEXT";
        for cut in 0..=wire.len() {
            for second in cut..=wire.len() {
                let mut decoder = Decoder::Chunked(Chunked::Size);
                let pieces = [&wire[..cut], &wire[cut..second], &wire[second..]];
                let (body, done) = decode_all(&mut decoder, &pieces).unwrap();
                assert_eq!(body, b"hello, world!", "cut at {cut}, {second}");
                assert!(done);
            }
        }
        // What follows the body stays in the buffer (it belongs to the next answer).
        let mut input = BytesMut::from(wire);
        let mut decoder = Decoder::Chunked(Chunked::Size);
        assert!(decode(&mut decoder, &mut input, &mut BytesMut::new()).unwrap());
        assert_eq!(&input[..], b"NEXT");
    }

    #[test]
    fn chunk_sizes_may_have_leading_zeros_spaces_and_extensions() {
        let mut decoder = Decoder::Chunked(Chunked::Size);
        let wire = b"00000000000000000005 ;name=value\r\nhello\r\n000\r\n\r\n";
        let (body, done) = decode_all(&mut decoder, &[wire]).unwrap();
        assert_eq!((body.as_slice(), done), (&b"hello"[..], true));
    }

    #[test]
    fn an_ipv6_upstream_is_connected_to_without_brackets() {
        let url = "http://[::1]:8000/v1/chat/completions".parse().unwrap();
        let client = Client::new(&url, Duration::from_secs(1), Duration::from_secs(1)).unwrap();
        assert_eq!((client.origin.host.as_str(), client.origin.port), ("::1", 8000));
        assert_eq!(client.origin.authority, "[::1]:8000");
    }

    #[test]
    fn a_request_debug_never_shows_header_values() {
        let headers: [(&str, &[u8]); 1] = [("Authorization", b"Bearer sk-secret")];
        let request = Request { path: "/v1", headers: &headers, body: b"{}" };
        let shown = format!("{request:?}");
        assert!(shown.contains("Authorization") && !shown.contains("sk-secret"), "{shown}");
    }

    #[test]
    fn lone_line_feeds_are_accepted_in_chunk_framing() {
        let mut decoder = Decoder::Chunked(Chunked::Size);
        let (body, done) = decode_all(&mut decoder, &[b"3\nabc\n0\n\n"]).unwrap();
        assert_eq!((body.as_slice(), done), (&b"abc"[..], true));
    }

    #[test]
    fn broken_chunk_framing_is_refused() {
        for wire in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"-1\r\n",
            b"5x\r\nhello\r\n",
            b"5 junk\r\nhello\r\n",
            b"3\r\nabcdef\r\n",
            b"10000000000000000\r\n",
        ] {
            let mut decoder = Decoder::Chunked(Chunked::Size);
            assert!(
                decode_all(&mut decoder, &[wire]).is_err(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let mut decoder = Decoder::Chunked(Chunked::Size);
        assert!(decode_all(&mut decoder, &[&[b'1'; MAX_LINE_BYTES + 1]]).is_err());
    }

    #[test]
    fn a_length_delimited_body_stops_at_its_length() {
        let mut decoder = Decoder::Length(5);
        let mut input = BytesMut::from(&b"hel"[..]);
        let mut out = BytesMut::new();
        assert!(!decode(&mut decoder, &mut input, &mut out).unwrap());
        input.extend_from_slice(b"loHTTP");
        assert!(decode(&mut decoder, &mut input, &mut out).unwrap());
        assert_eq!((&out[..], &input[..]), (&b"hello"[..], &b"HTTP"[..]));
    }

    #[test]
    fn response_heads_say_how_their_body_ends_and_whether_the_connection_stays_open() {
        let head = |text: &str| parse_head(text.as_bytes()).unwrap().unwrap().0;
        let chunked = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!((chunked.framing, chunked.keep_alive), (Framing::Chunked, true));
        // Both framings: read by its chunks, the connection not kept.
        let both =
            head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
        assert_eq!((both.framing, both.keep_alive), (Framing::Chunked, false));
        let length = head("HTTP/1.1 429 Too Many\r\ncontent-length: 12\r\nRetry-After: 7\r\n\r\n");
        assert_eq!((length.status, length.framing), (429, Framing::Length(12)));
        assert_eq!(length.retry_after.as_deref(), Some("7"));
        let close =
            head("HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 1\r\n\r\n");
        assert!(!close.keep_alive);
        let until_close = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((until_close.framing, until_close.keep_alive), (Framing::UntilClose, false));
        let old = head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n");
        assert!(!old.keep_alive);
        assert_eq!(
            head("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n").framing,
            Framing::Empty
        );

        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap().is_none());
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(parse_head(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}

/// The client against real sockets: a small server on 127.0.0.1 that answers every request the
/// same way, counting the connections it accepted.
#[cfg(test)]
mod network_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio_rustls::rustls::{RootCertStore, ServerConfig};

    use super::*;

    trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
    impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

    const ANSWER: &[u8] =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n";

    struct Server {
        url: url::Url,
        connections: Arc<AtomicUsize>,
    }

    /// Serves `ANSWER` to every request, closing each connection after `per_connection`: at
    /// once, or (`late_close`) only when the next request has arrived on it, unanswered.
    async fn serve(
        per_connection: usize,
        late_close: bool,
        tls: Option<TlsAcceptor>,
        scheme: &str,
    ) -> Server {
        serve_pieces(&[ANSWER], per_connection, late_close, tls, scheme).await
    }

    /// The same, answering with `pieces` written 50 ms apart.
    async fn serve_pieces(
        pieces: &'static [&'static [u8]],
        per_connection: usize,
        late_close: bool,
        tls: Option<TlsAcceptor>,
        scheme: &str,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&connections);
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let io: Box<dyn Io> = match tls {
                        Some(tls) => match tls.accept(tcp).await {
                            Ok(io) => Box::new(io),
                            Err(_) => return,
                        },
                        None => Box::new(tcp),
                    };
                    answer(io, pieces, per_connection, late_close).await;
                });
            }
        });
        let url = format!("{scheme}://localhost:{port}/v1/chat/completions").parse().unwrap();
        Server { url, connections }
    }

    /// Reads requests (head and `Content-Length` body) and answers each with `ANSWER`.
    async fn answer(
        mut io: Box<dyn Io>,
        pieces: &[&[u8]],
        per_connection: usize,
        late_close: bool,
    ) {
        let mut buf = BytesMut::new();
        for answered in 0.. {
            if answered == per_connection && !late_close {
                break;
            }
            let (head, length) = loop {
                let mut headers = [httparse::EMPTY_HEADER; 16];
                let mut request = httparse::Request::new(&mut headers);
                if let Ok(httparse::Status::Complete(head)) = request.parse(&buf) {
                    let length = request
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .map_or(0, |h| std::str::from_utf8(h.value).unwrap().parse().unwrap());
                    break (head, length);
                }
                if io.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
            };
            while buf.len() < head + length {
                if io.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
            }
            buf.advance(head + length);
            if answered == per_connection {
                break;
            }
            for (i, piece) in pieces.iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if io.write_all(piece).await.is_err() || io.flush().await.is_err() {
                    return;
                }
            }
        }
        let _ = io.shutdown().await;
    }

    async fn post(client: &Arc<Client>) -> Result<Bytes, Error> {
        let headers: [(&str, &[u8]); 1] = [("Content-Type", b"application/json")];
        let request = Request { path: "/v1/chat/completions", headers: &headers, body: b"{}" };
        let mut response = client.post(&request).await?;
        assert_eq!(response.status, 200);
        Ok(response.body.read_all(1024).await.unwrap())
    }

    fn client(url: &url::Url, tls: Option<ClientConfig>) -> Arc<Client> {
        let second = Duration::from_secs(1);
        Arc::new(Client::with_tls(url, tls, second, Duration::from_secs(60)).unwrap())
    }

    #[tokio::test]
    async fn answers_are_read_whole_and_the_connection_is_kept_for_the_next_call() {
        let server = serve(usize::MAX, false, None, "http").await;
        let client = client(&server.url, None);
        for _ in 0..3 {
            assert_eq!(post(&client).await.unwrap(), "hello world");
        }
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_few_interim_heads_are_skipped_but_a_101_or_an_endless_series_is_invalid() {
        const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world";
        const TWO_INTERIM: &[&[u8]] =
            &[b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n", OK];
        let server = serve_pieces(TWO_INTERIM, usize::MAX, false, None, "http").await;
        assert_eq!(post(&client(&server.url, None)).await.unwrap(), "hello world");

        const SWITCHING: &[&[u8]] = &[b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"];
        let server = serve_pieces(SWITCHING, usize::MAX, false, None, "http").await;
        let error = post(&client(&server.url, None)).await.unwrap_err();
        assert!(matches!(&error, Error::Invalid(problem) if problem.contains("101")), "{error:?}");

        const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
        const ENDLESS: &[&[u8]] = &[CONTINUE; 6];
        let server = serve_pieces(ENDLESS, usize::MAX, false, None, "http").await;
        let error = post(&client(&server.url, None)).await.unwrap_err();
        assert!(matches!(&error, Error::Invalid(problem) if problem.contains("1xx")), "{error:?}");
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_is_replaced_unseen() {
        let server = serve(1, false, None, "http").await;
        let client = client(&server.url, None);
        for _ in 0..3 {
            assert_eq!(post(&client).await.unwrap(), "hello world");
            // Let the upstream's close arrive before the next call, as with a real idle close.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(server.connections.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_request_the_upstream_closed_on_unanswered_is_never_sent_twice() {
        // Each connection answers once, then closes when the next request has arrived on it:
        // the upstream may have started on that request, so it is not sent again.
        let server = serve(1, true, None, "http").await;
        let client = client(&server.url, None);
        assert_eq!(post(&client).await.unwrap(), "hello world");
        assert!(matches!(post(&client).await, Err(Error::Closed(_))));
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);
        // The next call gets a new connection.
        assert_eq!(post(&client).await.unwrap(), "hello world");
        assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_body_finished_in_the_background_keeps_its_connection() {
        // The answer's content, then its end a moment later (an SSE stream's `[DONE]`, then
        // the last chunk of the encoding).
        const PIECES: &[&[u8]] =
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", b"0\r\n\r\n"];
        let server = serve_pieces(PIECES, usize::MAX, false, None, "http").await;
        let client = client(&server.url, None);
        let headers: [(&str, &[u8]); 0] = [];
        let request = Request { path: "/", headers: &headers, body: b"" };
        let mut response = client.post(&request).await.unwrap();
        assert_eq!(response.body.read().await.unwrap().unwrap(), "hello");
        response.body.finish_in_background(Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut response = client.post(&request).await.unwrap();
        assert_eq!(response.body.read_all(1024).await.unwrap(), "hello");
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_closes_its_connection() {
        let server = serve(usize::MAX, false, None, "http").await;
        let client = client(&server.url, None);
        let headers: [(&str, &[u8]); 0] = [];
        let request = Request { path: "/", headers: &headers, body: b"" };
        drop(client.post(&request).await.unwrap());
        assert_eq!(post(&client).await.unwrap(), "hello world");
        assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn tls_upstreams_are_verified_and_spoken_to_over_tls() {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let certificate = CertificateDer::from(certified.cert.der().to_vec());
        let key =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
        let server_config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![certificate.clone()], key)
            .unwrap();
        let server =
            serve(usize::MAX, false, Some(TlsAcceptor::from(Arc::new(server_config))), "https")
                .await;

        // Trusting the test's certificate: the answer arrives, over one kept connection.
        let mut roots = RootCertStore::empty();
        roots.add(certificate).unwrap();
        let trusting = ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        let client = client(&server.url, Some(trusting));
        for _ in 0..2 {
            assert_eq!(post(&client).await.unwrap(), "hello world");
        }
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);

        // The relay's own configuration (the platform's authorities) refuses the self-signed
        // certificate: no request is sent.
        let relay = Arc::new(
            Client::new(&server.url, Duration::from_secs(1), Duration::from_secs(60)).unwrap(),
        );
        assert!(matches!(post(&relay).await, Err(Error::Connect(_))));
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}/").parse().unwrap();
        assert!(matches!(post(&client(&url, None)).await, Err(Error::Connect(_))));
    }
}

/// Property tests of the response parsing: the head parser and the body decoders never panic,
/// whatever the upstream sends and however it arrives, and once a body's framing is broken the
/// body never ends cleanly, which is what would hand its connection back for another call.
#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    /// Bytes that look like an HTTP/1.1 response head more often than random bytes do.
    fn head_like() -> impl Strategy<Value = Vec<u8>> {
        let fragment = prop_oneof![
            Just(b"HTTP/1.1 200 OK\r\n".to_vec()),
            Just(b"HTTP/1.0 ".to_vec()),
            Just(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()),
            Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
            Just(b"Transfer-Encoding: gzip, chunked\r\n".to_vec()),
            Just(b"Content-Length: 5\r\n".to_vec()),
            Just(b"Content-Length: 18446744073709551616\r\n".to_vec()),
            Just(b"Content-Length: ".to_vec()),
            Just(b"Connection: close, keep-alive\r\n".to_vec()),
            Just(b"Retry-After: 7\r\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b": ".to_vec()),
            proptest::collection::vec(any::<u8>(), 1..6),
        ];
        proptest::collection::vec(fragment, 0..24).prop_map(|fragments| fragments.concat())
    }

    /// Bytes that look like a chunked body more often than random bytes do.
    fn chunked_like() -> impl Strategy<Value = Vec<u8>> {
        let fragment = prop_oneof![
            Just(b"5\r\nhello\r\n".to_vec()),
            Just(b"0\r\n\r\n".to_vec()),
            Just(b"0\r\n".to_vec()),
            Just(b"ffffffffffffffff\r\n".to_vec()),
            Just(b"10000000000000000\r\n".to_vec()),
            Just(b"3;ext=1\r\n".to_vec()),
            Just(b"X-Trailer: yes\r\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"zz".to_vec()),
            proptest::collection::vec(any::<u8>(), 1..8),
        ];
        proptest::collection::vec(fragment, 0..16).prop_map(|fragments| fragments.concat())
    }

    fn decoder(kind: u8, length: u64) -> Decoder {
        match kind % 3 {
            0 => Decoder::Chunked(Chunked::Size),
            1 => Decoder::Length(length),
            _ => Decoder::UntilClose,
        }
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn the_head_parser_never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_head(&bytes);
        }

        #[test]
        fn the_head_parser_never_panics_on_head_like_bytes(bytes in head_like()) {
            if let Ok(Some((head, length))) = parse_head(&bytes) {
                prop_assert!(length <= bytes.len());
                // A head that frames its body by closing the connection never keeps it.
                if head.framing == Framing::UntilClose {
                    prop_assert!(!head.keep_alive);
                }
            }
        }

        #[test]
        fn decoding_any_body_never_panics_however_it_is_cut(
            kind in any::<u8>(),
            length in prop_oneof![0u64..64, Just(u64::MAX)],
            bytes in prop_oneof![chunked_like(), proptest::collection::vec(any::<u8>(), 0..256)],
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let mut decoder = decoder(kind, length);
            let mut input = BytesMut::new();
            for piece in pieces(&bytes, &cuts) {
                input.extend_from_slice(piece);
                let mut out = BytesMut::new();
                if decode(&mut decoder, &mut input, &mut out).is_err() {
                    break;
                }
            }
        }

        #[test]
        fn after_a_framing_error_a_body_never_ends_cleanly(
            bytes in chunked_like(),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
            after in prop_oneof![Just(b"0\r\n\r\n".to_vec()), chunked_like()],
        ) {
            let mut decoder = Decoder::Chunked(Chunked::Size);
            let mut input = BytesMut::new();
            let mut failed = false;
            for piece in pieces(&bytes, &cuts).into_iter().chain([after.as_slice()]) {
                input.extend_from_slice(piece);
                let mut out = BytesMut::new();
                match decode(&mut decoder, &mut input, &mut out) {
                    Err(_) => failed = true,
                    // Ending is what hands the connection back (`Body::finish`).
                    Ok(true) => prop_assert!(!failed, "the body ended after its framing broke"),
                    Ok(false) => {}
                }
                if let Ok(true) = decode(&mut decoder, &mut input, &mut out) {
                    prop_assert!(!failed, "the body ended after its framing broke");
                }
            }
        }
    }

    /// The same through a real socket: a caller that reads again after a framing error (here
    /// the end of the body follows the broken chunk) never gets the connection back into the
    /// pool, where the next call would read the rest of this answer as its own.
    #[tokio::test]
    async fn a_body_whose_framing_broke_never_returns_its_connection_to_the_pool() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut request = BytesMut::new();
            while !request.ends_with(b"\r\n\r\n{}") {
                if tcp.read_buf(&mut request).await.unwrap_or(0) == 0 {
                    return;
                }
            }
            let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n0\r\n\r\n";
            tcp.write_all(answer).await.unwrap();
            // Stay open, as a keep-alive upstream does.
            let _ = tcp.read_buf(&mut request).await;
        });
        let url = format!("http://127.0.0.1:{port}/").parse().unwrap();
        let second = Duration::from_secs(1);
        let client =
            Arc::new(Client::with_tls(&url, None, second, Duration::from_secs(60)).unwrap());
        let headers: [(&str, &[u8]); 0] = [];
        let request = Request { path: "/", headers: &headers, body: b"{}" };
        let mut response = client.post(&request).await.unwrap();
        assert!(matches!(response.body.read().await, Err(Error::Invalid(_))));
        for _ in 0..3 {
            assert!(matches!(response.body.read().await, Err(Error::Invalid(_))));
        }
        let idle = client.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len();
        assert_eq!(idle, 0, "a connection whose framing broke went back to the pool");
    }
}
