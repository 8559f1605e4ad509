//! A webhook receiver for tests, served by axum on 127.0.0.1: it answers deliveries with the
//! statuses a test scripts (then 200), or never answers at all, and records every request it
//! gets.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};

/// One request the receiver got, and the status it answered.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub status: u16,
}

impl Delivery {
    /// A header's value (empty when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Checks the signature as the README tells receivers to, computed here independently of
    /// the relay's code: `Confab-Signature` is a comma-separated list of `<scheme>=<hex>`, and
    /// its `v2` must be the HMAC-SHA256 under `secret` of `Confab-Delivery`, a dot,
    /// `Confab-Timestamp`, a dot, and the raw body.
    pub fn signature_is_valid(&self, secret: &str) -> bool {
        self.signed_by(
            secret,
            "v2",
            &[
                self.header("confab-delivery").as_bytes(),
                self.header("confab-timestamp").as_bytes(),
            ],
        )
    }

    /// The deprecated `v1` signature: the HMAC-SHA256 of `Confab-Timestamp`, a dot, and the
    /// raw body (not the delivery id).
    pub fn v1_signature_is_valid(&self, secret: &str) -> bool {
        self.signed_by(secret, "v1", &[self.header("confab-timestamp").as_bytes()])
    }

    /// Whether the `scheme` signature is the HMAC of `prefix`, then the body, joined by dots.
    fn signed_by(&self, secret: &str, scheme: &str, prefix: &[&[u8]]) -> bool {
        let given = self
            .header("confab-signature")
            .split(',')
            .filter_map(|part| part.split_once('='))
            .find(|(name, _)| *name == scheme)
            .and_then(|(_, hex)| hex::decode(hex).ok());
        let Some(given) = given else { return false };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        for part in prefix {
            mac.update(part);
            mac.update(b".");
        }
        mac.update(&self.body);
        mac.verify_slice(&given).is_ok()
    }
}

#[derive(Default)]
struct Shared {
    script: Mutex<VecDeque<u16>>,
    /// Never answer: a receiver that hangs until the relay gives up on it.
    hang: bool,
    received: Mutex<Vec<Delivery>>,
    arrived: Notify,
}

/// A running receiver; stops when dropped.
#[derive(Debug)]
pub struct WebhookReceiver {
    /// The URL to configure as an endpoint.
    pub url: String,
    shared: Arc<Shared>,
    _shutdown: oneshot::Sender<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let status = shared.script.lock().unwrap().pop_front().unwrap_or(200);
    shared.received.lock().unwrap().push(Delivery { headers, body, status });
    shared.arrived.notify_waiters();
    if shared.hang {
        // Until the relay hangs up (which drops this future).
        std::future::pending::<()>().await;
    }
    StatusCode::from_u16(status).unwrap()
}

impl WebhookReceiver {
    /// A receiver on a free port that answers with `script`'s statuses in turn, then 200.
    pub async fn start(script: &[u16]) -> Self {
        Self::serve(TcpListener::bind("127.0.0.1:0").await.unwrap(), script, false)
    }

    /// The same, on a given address (one that `unused_address` returned).
    pub async fn start_on(addr: SocketAddr, script: &[u16]) -> Self {
        Self::serve(TcpListener::bind(addr).await.unwrap(), script, false)
    }

    /// A receiver that takes every request in (and records it) but never answers.
    pub async fn hanging() -> Self {
        Self::serve(TcpListener::bind("127.0.0.1:0").await.unwrap(), &[], true)
    }

    fn serve(listener: TcpListener, script: &[u16], hang: bool) -> Self {
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared { hang, ..Shared::default() });
        shared.script.lock().unwrap().extend(script);
        let app = Router::new().fallback(receive).with_state(Arc::clone(&shared));
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = shutdown_rx.await;
                })
                .await
                .unwrap();
        });
        Self { url: format!("http://{addr}/hooks/confab"), shared, _shutdown: shutdown_tx }
    }

    /// Every request received so far, in order.
    pub fn received(&self) -> Vec<Delivery> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits (bounded by `WAIT`) until at least `count` requests have arrived; returns them all.
    pub async fn wait_for(&self, count: usize) -> Vec<Delivery> {
        tokio::time::timeout(crate::WAIT, async {
            loop {
                let arrived = self.shared.arrived.notified();
                let received = self.received();
                if received.len() >= count {
                    return received;
                }
                arrived.await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!("the receiver got {} requests, not {count}", self.received().len())
        })
    }
}

/// An address on 127.0.0.1 where nothing listens (connections to it are refused), for a
/// receiver that is down; `WebhookReceiver::start_on` brings it up later.
pub async fn unused_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}
