//! The relay benchmark's floor: a proxy on Confab's HTTP stack that does nothing else.
//!
//! The same server as Confab's (axum's router on hyper's HTTP/1.1 server, with a timer and a
//! header time limit, `TCP_NODELAY`, one Tokio task per connection on a runtime with a worker
//! per core) and the same upstream client (reqwest, keep-alive pool, `TCP_NODELAY`), passing
//! the request body to the upstream and its answer back, streamed or not, frame by frame. No
//! key, no policy, no limits, no metering, no parsing: what a request costs on this stack before
//! Confab does any of its own work. `--client hyper` uses hyper-util's pooled client instead of
//! reqwest, to see what reqwest's own layers cost.
//!
//! Prints `stack proxy listening on http://ADDR` once it accepts connections.
#![expect(
    clippy::unwrap_used,
    reason = "benchmark tool: a failure aborts the run with its message"
)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(about = "A pass-through proxy on Confab's HTTP stack, for the relay benchmark")]
struct Cli {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// The upstream's API root, e.g. http://127.0.0.1:9000/v1.
    #[arg(long)]
    upstream: String,
    /// The upstream client.
    #[arg(long, value_enum, default_value_t = ClientKind::Reqwest)]
    client: ClientKind,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ClientKind {
    /// reqwest, as Confab uses it.
    Reqwest,
    /// hyper-util's legacy (pooled) client, without reqwest's layers.
    Hyper,
}

#[derive(Debug, Clone)]
enum Upstream {
    Reqwest(reqwest::Client, reqwest::Url),
    Hyper(Box<HyperClient<HttpConnector, Full<Bytes>>>, hyper::Uri),
}

async fn chat(State(upstream): State<Arc<Upstream>>, body: Bytes) -> Response {
    let json = HeaderValue::from_static("application/json");
    match upstream.as_ref() {
        Upstream::Reqwest(client, url) => {
            let answer =
                client.post(url.clone()).header(header::CONTENT_TYPE, json).body(body).send().await;
            let Ok(answer) = answer else {
                return axum::http::StatusCode::BAD_GATEWAY.into_response();
            };
            let status = answer.status();
            let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
            let mut response = Response::new(Body::from_stream(answer.bytes_stream()));
            *response.status_mut() = status;
            if let Some(content_type) = content_type {
                response.headers_mut().insert(header::CONTENT_TYPE, content_type);
            }
            response
        }
        Upstream::Hyper(client, uri) => {
            let request = hyper::Request::post(uri.clone())
                .header(header::CONTENT_TYPE, json)
                .body(Full::new(body))
                .unwrap();
            match client.request(request).await {
                Ok(answer) => answer.map(Body::new),
                Err(_) => axum::http::StatusCode::BAD_GATEWAY.into_response(),
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let endpoint = format!("{}/chat/completions", cli.upstream.trim_end_matches('/'));
    let upstream = match cli.client {
        ClientKind::Reqwest => Upstream::Reqwest(
            reqwest::Client::builder()
                .tcp_nodelay(true)
                .pool_idle_timeout(Duration::from_secs(90))
                .build()?,
            endpoint.parse().context("--upstream")?,
        ),
        ClientKind::Hyper => {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            let client = HyperClient::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .build(connector);
            Upstream::Hyper(Box::new(client), endpoint.parse().context("--upstream")?)
        }
    };
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat))
        .with_state(Arc::new(upstream));
    let listener = TcpListener::bind(cli.listen).await?;
    println!("stack proxy listening on http://{}", listener.local_addr()?);
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(10)).keep_alive(true);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let connection =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}
