//! What is sent: the event kinds, the JSON payload of each (`{"id", "type", "created",
//! "data"}`), and the signature of a delivery.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::budget::{Crossing, Payer};
use crate::sitekey::KeyKind;
use crate::store::{ApiKey, Conversation, Message, UsageRecord, WebhookEvent};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A budget of a key or a site crossed 80 % or 100 % in its period.
    BudgetThreshold,
    /// A secret API key was revoked.
    KeyRevoked,
    /// A chat request ended (completed, interrupted or failed upstream).
    RequestCompleted,
    /// A visitor asked for a person.
    ConversationHandoff,
}

impl EventKind {
    pub const ALL: [EventKind; 4] = [
        EventKind::BudgetThreshold,
        EventKind::KeyRevoked,
        EventKind::RequestCompleted,
        EventKind::ConversationHandoff,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::BudgetThreshold => "budget.threshold",
            EventKind::KeyRevoked => "key.revoked",
            EventKind::RequestCompleted => "request.completed",
            EventKind::ConversationHandoff => "conversation.handoff",
        }
    }

    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

type HmacSha256 = Hmac<Sha256>;

/// The hex HMAC-SHA256, under `secret`, of `parts` joined by dots.
pub(crate) fn hmac_hex(secret: &[u8], parts: &[&[u8]]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            mac.update(b".");
        }
        mac.update(part);
    }
    hex::encode(mac.finalize().into_bytes())
}

/// The `Confab-Signature` header of delivery `delivery_id`, whose `body` is sent at `timestamp`
/// (unix seconds), under the endpoint's secret: `v1=<hex>,v2=<hex>`.
///
/// `v2` is the HMAC-SHA256 of `"<delivery id>.<timestamp>.<body>"`. `v1`, of
/// `"<timestamp>.<body>"`, is deprecated and still sent so that receivers written for it keep
/// working while they move to `v2`: it does not cover the delivery id, so a captured request
/// could be replayed within the timestamp tolerance under another `Confab-Delivery` and get
/// past a receiver's deduplication.
pub fn signature(secret: &[u8], delivery_id: &str, timestamp: u64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    let v1 = hmac_hex(secret, &[timestamp.as_bytes(), body]);
    let v2 = hmac_hex(secret, &[delivery_id.as_bytes(), timestamp.as_bytes(), body]);
    format!("v1={v1},v2={v2}")
}

pub(super) fn new_id(prefix: &str) -> String {
    use rand::Rng;
    let suffix: String =
        rand::rng().sample_iter(rand::distr::Alphanumeric).take(20).map(char::from).collect();
    format!("{prefix}_{suffix}")
}

/// An event ready for the outbox: its body is `{"id", "type", "created", "data"}`.
fn event(kind: EventKind, site_id: Option<String>, data: Value) -> WebhookEvent {
    let id = new_id("evt");
    let created_at_ms = crate::unix_now_ms();
    let payload = json!({
        "id": id,
        "type": kind.as_str(),
        "created": created_at_ms / 1000,
        "data": data,
    })
    .to_string();
    WebhookEvent { id, kind: kind.as_str().to_owned(), site_id, payload, created_at_ms }
}

/// `budget.threshold`: who crossed which share of which budget.
pub fn budget_threshold(crossing: &Crossing) -> WebhookEvent {
    let site = match &crossing.payer {
        Payer::Site(id) => Some(id.clone()),
        Payer::Key(_) => None,
    };
    event(
        EventKind::BudgetThreshold,
        site,
        json!({
            "payer": crossing.payer.to_string(),
            "payer_id": crossing.payer.id(),
            "period": crossing.period.to_string(),
            "period_kind": crossing.period.kind().as_str(),
            "percent": crossing.percent,
            "spent_micros": crossing.spent,
            "budget_micros": crossing.budget,
        }),
    )
}

/// `key.revoked`: the key's id, name and public prefix (never its secret).
pub fn key_revoked(key: &ApiKey) -> WebhookEvent {
    event(
        EventKind::KeyRevoked,
        None,
        json!({
            "id": key.id,
            "name": key.name,
            "key_prefix": KeyKind::Secret.public(&key.lookup_id),
            "revoked_at": key.revoked_at,
        }),
    )
}

/// `request.completed`: the usage record (who, which model, tokens, cost, latency, outcome);
/// never the messages.
pub fn request_completed(record: &UsageRecord) -> WebhookEvent {
    event(
        EventKind::RequestCompleted,
        record.site_id.clone(),
        json!({
            "at_ms": record.at_ms,
            "site_id": record.site_id,
            "key_id": record.key_id,
            "visitor": record.visitor,
            "model": record.model,
            "upstream": record.upstream,
            "input_tokens": record.input_tokens,
            "output_tokens": record.output_tokens,
            "cache_read_tokens": record.cache_read_tokens,
            "cache_write_tokens": record.cache_write_tokens,
            "estimated": record.estimated,
            "cost_micros": record.cost_micros,
            "first_token_ms": record.first_token_ms,
            "total_ms": record.total_ms,
            "outcome": record.outcome.as_str(),
        }),
    )
}

/// Where a `conversation.handoff` event sends operators: the conversation in the console, and
/// the same as JSON, both signed and valid until `expires` (unix seconds), no login needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedLink {
    pub console: String,
    pub api: String,
    pub expires: i64,
}

/// `conversation.handoff`: the conversation (who, where, what it cost), its latest messages,
/// and signed links that open it read-only until `link_expires` (unix seconds): `link` in the
/// console, `api_link` as JSON.
pub fn conversation_handoff(
    conversation: &Conversation,
    messages: &[Message],
    link: &SharedLink,
) -> WebhookEvent {
    let messages: Vec<Value> = messages
        .iter()
        .map(|m| {
            json!({"seq": m.seq, "author": m.author.as_str(), "content": m.content, "at_ms": m.at_ms})
        })
        .collect();
    event(
        EventKind::ConversationHandoff,
        Some(conversation.site_id.clone()),
        json!({
            "conversation_id": conversation.id,
            "site_id": conversation.site_id,
            "visitor": conversation.visitor,
            "page_url": conversation.page_url,
            "started_at_ms": conversation.started_at_ms,
            "cost_micros": conversation.cost_micros,
            "messages": messages,
            "link": link.console,
            "api_link": link.api,
            "link_expires": link.expires,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Period;
    use crate::store::{CallerLimits, Outcome, Scope};

    #[test]
    fn the_signature_carries_v2_over_the_delivery_id_and_the_deprecated_v1() {
        // Computed independently, with Python's hmac module.
        let secret = b"whsec_test_0123456789abcdef";
        let body = br#"{"id":"evt_1"}"#;
        assert_eq!(
            signature(secret, "whd_1", 1_700_000_000, body),
            "v1=950d8e5fabb3af089049297d5e94a2a84e25776792dfb61711758872d45f2336,\
             v2=91ebc5d46d0a1d9e31b1e8242919401b8466bc95e62184f1bb186bb999585792"
        );
        // Another delivery of the same body at the same time: v1 is the same, v2 is not.
        assert_eq!(
            signature(secret, "whd_2", 1_700_000_000, body),
            "v1=950d8e5fabb3af089049297d5e94a2a84e25776792dfb61711758872d45f2336,\
             v2=2018c9ecf667623d7ef6738ae2017af925e050064725487a68d46a1c7948547e"
        );
    }

    fn data(event: &WebhookEvent) -> Value {
        let body: Value = serde_json::from_str(&event.payload).unwrap();
        assert_eq!(body["id"], event.id.as_str());
        assert_eq!(body["type"], event.kind.as_str());
        assert_eq!(body["created"], event.created_at_ms / 1000);
        body["data"].clone()
    }

    #[test]
    fn event_payloads_carry_the_documented_fields() {
        let crossing = Crossing {
            payer: Payer::Site("site_a".into()),
            period: Period::Month { year: 2026, month: 11 },
            percent: 80,
            spent: 8_000_000,
            budget: 10_000_000,
        };
        let event = budget_threshold(&crossing);
        assert_eq!(event.site_id.as_deref(), Some("site_a"));
        assert_eq!(
            data(&event),
            json!({"payer": "site", "payer_id": "site_a", "period": "2026-11",
                   "period_kind": "monthly", "percent": 80, "spent_micros": 8_000_000,
                   "budget_micros": 10_000_000})
        );

        let key = ApiKey {
            id: "key_1".into(),
            name: "backend".into(),
            lookup_id: "abcd1234".into(),
            scopes: vec![Scope::Chat],
            models: Vec::new(),
            limits: CallerLimits::default(),
            created_at: 1,
            last_used_at: None,
            revoked_at: Some(1_700_000_000),
            previous_lookup_id: None,
            previous_expires_at: None,
        };
        let event = key_revoked(&key);
        assert_eq!((event.kind.as_str(), event.site_id.as_deref()), ("key.revoked", None));
        assert_eq!(
            data(&event),
            json!({"id": "key_1", "name": "backend",
                   "key_prefix": KeyKind::Secret.public("abcd1234"), "revoked_at": 1_700_000_000})
        );

        let record = UsageRecord {
            request_id: "req_1".into(),
            at_ms: 1_700_000_000_000,
            site_id: None,
            key_id: Some("key_1".into()),
            visitor: None,
            model: "m".into(),
            upstream: "u".into(),
            input_tokens: 7,
            output_tokens: 3,
            cache_read_tokens: 4,
            cache_write_tokens: 2,
            estimated: false,
            cost_micros: 10,
            first_token_ms: Some(5),
            total_ms: 9,
            outcome: Outcome::Completed,
        };
        let event = request_completed(&record);
        assert_eq!(
            data(&event),
            json!({"at_ms": 1_700_000_000_000_i64, "site_id": null, "key_id": "key_1",
                   "visitor": null, "model": "m", "upstream": "u", "input_tokens": 7,
                   "output_tokens": 3, "cache_read_tokens": 4, "cache_write_tokens": 2,
                   "estimated": false, "cost_micros": 10,
                   "first_token_ms": 5, "total_ms": 9, "outcome": "completed"})
        );
    }
}
