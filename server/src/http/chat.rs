//! `POST /v1/chat/completions`: authenticate, apply the caller's policy, admit the request
//! against its rate limits and budget, call the upstream, and either stream the answer through or
//! pass on its whole answer (collected from a stream for the demo, which only streams). The
//! request's meter travels with the answer and is settled however the answer ends.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use confab_metering::admission::{Claim, Refusal};
use confab_protocol::{ChatRequest, Role};

use super::auth::{site_visitor, visitor_hash};
use super::{ApiJson, AppState, Caller, RequestId, streams};
use crate::budget::{BudgetRule, Payer};
use crate::conversations::{self, Transcript};
use crate::error::ApiError;
use crate::knowledge::grounding::Sources;
use crate::limits::{RateLimitStatus, Rule, Subject};
use crate::meter::{Admitted, Ceiling, Meter};
use crate::metrics::ChatLabels;
use crate::policy::{SitePolicy, ToolAccess};
use crate::relay::{self, Routing, collect_completion};
use crate::store::{CallerLimits, Outcome, Scope, Site, UsageRecord};
use crate::upstreams::Route;
use crate::visitor::Visitor;
use confab_providers::estimate::{prompt_bytes, prompt_token_ceiling};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/chat/completions", post(create_chat_completion))
}

/// The TCP peer's address (absent only when the router is driven without a listener).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())))
    }
}

async fn create_chat_completion(
    State(state): State<AppState>,
    caller: Caller,
    Peer(peer): Peer,
    request_id: RequestId,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ChatRequest>,
) -> Response {
    // The site and model travel to the request log and metrics (`log_request`) on the
    // response, whether it is an answer or an error.
    let mut labels = None;
    let chat = Chat { caller, peer, request_id, headers: &headers };
    let mut response = match chat_completion(&state, chat, request, &mut labels).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    if let Some(labels) = labels {
        response.extensions_mut().insert(labels);
    }
    response
}

/// Who asks, from where, under which id.
struct Chat<'a> {
    caller: Caller,
    peer: Option<IpAddr>,
    request_id: RequestId,
    headers: &'a HeaderMap,
}

async fn chat_completion(
    state: &AppState,
    chat: Chat<'_>,
    request: ChatRequest,
    labels: &mut Option<ChatLabels>,
) -> Result<Response, ApiError> {
    let Chat { caller, peer, request_id, headers } = chat;
    caller.require(Scope::Chat)?;
    let site = match &caller {
        Caller::Site(site) => Some(site.id.as_str()),
        Caller::Key(_) => None,
    };
    *labels = Some(state.metrics.chat_labels(site, ""));
    let (defaults, limits) = (&state.config.policy, &state.config.limits);
    let policy = match &caller {
        Caller::Site(site) => SitePolicy::for_site(&site.settings, defaults, limits),
        Caller::Key(key) if key.models.is_empty() => {
            SitePolicy::for_key(state.upstreams.models(), defaults, limits)
        }
        Caller::Key(key) => SitePolicy::for_key(&key.models, defaults, limits),
    };
    let policy = match &caller {
        Caller::Key(key) if key.has_scope(Scope::Tools) => {
            SitePolicy { tools: ToolAccess::Granted, ..policy }
        }
        _ => policy,
    };
    let stream_to_client = request.stream;
    // The conversation the request belongs to, on a site that keeps transcripts; refused
    // before anything is charged when a person holds it.
    let conversation = match &caller {
        Caller::Site(site) => match conversations::context_of(site, headers)? {
            Some(context) => {
                conversations::ensure_bot_answers(state.store.as_ref(), site, &context).await?;
                Some(context)
            }
            None => None,
        },
        Caller::Key(_) => None,
    };
    let question = conversation.as_ref().map(|_| {
        let last = request.messages.iter().rev().find(|m| m.role == Role::User);
        last.map(|m| m.content.clone()).unwrap_or_default()
    });
    // What the site's own documents say about the question, for a site that has knowledge; a
    // site without any sends the same request as before knowledge existed.
    let sources = match &caller {
        Caller::Site(site) => ground(state, site, &request, policy.context_bytes).await?,
        Caller::Key(_) => None,
    };
    let policy = SitePolicy { sources: sources.as_ref().map(|s| s.block.as_str()), ..policy };
    let mut upstream_request = policy.apply(request)?;
    let model = upstream_request.model.as_deref().unwrap_or_default();
    let labels = labels.get_or_insert_with(|| state.metrics.chat_labels(site, ""));
    labels.model = state.metrics.model(model);
    let labels = labels.clone();
    let route = state
        .upstreams
        .route(model)
        .ok_or_else(|| ApiError::ModelUnavailable { model: model.to_owned() })?;
    let first = &route.targets[0];
    tracing::Span::current().record("upstream", first.upstream.as_str());

    let timeouts = &state.config.timeouts;
    // A client that wants one whole answer gets it from one upstream call that does not stream
    // either, where the model's targets can answer that way (the demo only streams).
    let whole_answer = !stream_to_client && route.answers_whole();
    if whole_answer {
        upstream_request.stream = false;
        upstream_request.stream_options = None;
    }
    state.upstreams.retry_budget.deposit();
    let routing = Routing { route, budget: &state.upstreams.retry_budget };
    let admission = Admission { caller: &caller, peer, headers, route, labels };
    let (mut meter, status) = admit(state, admission, &upstream_request, request_id).await?;
    if let (Caller::Site(site), Some(context), Some(question)) = (&caller, conversation, question) {
        let turns = state.turns.clone();
        let transcript = Transcript::new(site, context, meter.record(), question, turns);
        meter.keep_transcript(transcript);
    }
    // The worst case is durable before the upstream sees the request, so that a crash from here
    // on cannot lose its cost (settled at start-up; see `Metering::start`).
    meter.write_pending().map_err(|_| ApiError::Unavailable {
        code: "usage_unrecorded",
        message: "the relay cannot record usage right now; retry later",
    })?;
    let (mut response, target) = if whole_answer {
        let cut = Some(state.cut.watch());
        let (answer, target) =
            relay::complete(routing, &mut upstream_request, timeouts, Some(meter), cut).await?;
        let json = [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))];
        ((json, answer).into_response(), target)
    } else {
        // Who may follow the stream again, worked out before the upstream is called.
        let owner = match stream_to_client {
            true => streams::owner(state, &caller, peer, headers)?,
            false => None,
        };
        let cut = Some(state.cut.watch());
        let mut plan =
            relay::start(routing, &mut upstream_request, timeouts, Some(meter), cut).await?;
        if let Some(sources) = sources {
            plan.cite(sources.sources);
        }
        let target = Arc::clone(&plan.target);
        let response = if stream_to_client {
            streams::stream_answer(state, owner, plan).await
        } else {
            Json(collect_completion(plan).await?).into_response()
        };
        (response, target)
    };
    if let Ok(label) = HeaderValue::from_str(&target.label) {
        response.headers_mut().insert(X_CONFAB_UPSTREAM, label);
    }
    if let Some(status) = status {
        status.apply(response.headers_mut());
    }
    Ok(response)
}

/// The sources block for a request of `site`: the passages of its knowledge that best answer
/// the latest user message (with the earlier ones for follow-ups), within the `[knowledge]`
/// token budget and at most half of the context (`context_bytes`), which the conversation then
/// shares. `None` for a site without knowledge (or a `prefer` site where nothing matched).
async fn ground(
    state: &AppState,
    site: &Site,
    request: &ChatRequest,
    context_bytes: u32,
) -> Result<Option<Sources>, ApiError> {
    if !state.knowledge.has(&site.id) {
        return Ok(None);
    }
    let questions: Vec<&str> = request
        .messages
        .iter()
        .filter(|m| m.role == Role::User)
        .map(|m| m.content.as_str())
        .collect();
    if questions.is_empty() {
        return Ok(None);
    }
    let config = &state.config.knowledge;
    let found = state.knowledge.retrieve(&site.id, &questions, config.top_k).await;
    let found = match found {
        Ok(Some(found)) => found,
        Ok(None) => return Ok(None),
        Err(error) => {
            tracing::warn!(%error, "cannot read the site's knowledge");
            return Err(ApiError::Unavailable {
                code: "knowledge_unavailable",
                message: "the site's knowledge cannot be read right now; retry later",
            });
        }
    };
    let max_bytes = (config.max_context_tokens as usize).saturating_mul(4);
    let max_bytes = max_bytes.min(context_bytes as usize / 2);
    let settings = &site.settings;
    Ok(Sources::build(
        &found.passages,
        settings.grounding,
        settings.conversations.handoff,
        max_bytes,
    ))
}

fn rule(limits: &CallerLimits) -> Rule {
    Rule { rpm: limits.rpm, rpd: limits.rpd, tpm: limits.tpm }
}

fn budget_rule(limits: &CallerLimits) -> BudgetRule {
    BudgetRule { monthly: limits.monthly_budget_micros, daily: limits.daily_budget_micros }
}

/// What `admit` needs to know of a request beyond its body.
struct Admission<'a> {
    caller: &'a Caller,
    peer: Option<IpAddr>,
    headers: &'a HeaderMap,
    /// The model's targets: the first names the upstream until one answers, and the priciest
    /// sets the worst case.
    route: &'a Route,
    labels: ChatLabels,
}

/// The response header that names the target that answered: `<upstream>:<model>`.
pub const X_CONFAB_UPSTREAM: HeaderName = HeaderName::from_static("x-confab-upstream");

/// A visitor's requests per minute and per day on `site`: the site's own visitor limits, or
/// the `[visitors]` defaults; verified visitors have theirs.
pub(super) fn visitor_rule(state: &AppState, site: &Site, visitor: &Visitor) -> Rule {
    let (visitors, own) = (&state.config.visitors, &site.settings.visitor_limits);
    if visitor.is_verified() {
        Rule {
            rpm: Some(own.verified_rpm.unwrap_or(visitors.verified_rpm)),
            rpd: Some(own.verified_rpd.unwrap_or(visitors.verified_rpd)),
            tpm: None,
        }
    } else {
        Rule {
            rpm: Some(own.rpm.unwrap_or(visitors.rpm)),
            rpd: Some(own.rpd.unwrap_or(visitors.rpd)),
            tpm: None,
        }
    }
}

/// The error for a refused admission (402, 429 or 503, each with its headers), counted in the
/// metrics.
pub(super) fn refused(state: &AppState, refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Exhausted(exhausted) => {
            state.metrics.budget_refused(&exhausted);
            ApiError::InsufficientQuota(exhausted)
        }
        Refusal::RateLimited(rejected) => {
            state.metrics.limit_refused(&rejected);
            ApiError::RateLimited(rejected)
        }
        Refusal::Unavailable(unavailable) => {
            let wait = unavailable.retry_after;
            let retry_after = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
            ApiError::BudgetUnavailable { retry_after }
        }
    }
}

/// Reserves the request's worst-case cost against the caller's budgets and charges it to the
/// rate limits of the caller and (for a site) of the visitor, in one all-or-nothing step: a
/// refusal changes nothing (but for its count in the metrics). With Redis, one round trip.
async fn admit(
    state: &AppState,
    admission: Admission<'_>,
    request: &ChatRequest,
    RequestId(request_id): RequestId,
) -> Result<(Meter, Option<RateLimitStatus>), ApiError> {
    let Admission { caller, peer, headers, route, labels } = admission;
    let upstream = route.targets[0].upstream.as_str();
    let model = request.model.clone().unwrap_or_default();
    let mut record = UsageRecord {
        request_id: request_id.to_string(),
        at_ms: crate::unix_now_ms(),
        site_id: None,
        key_id: None,
        visitor: None,
        model,
        upstream: upstream.to_owned(),
        input_tokens: 0,
        output_tokens: 0,
        cache_read_tokens: 0,
        cache_write_tokens: 0,
        estimated: false,
        cost_micros: 0,
        first_token_ms: None,
        total_ms: 0,
        outcome: Outcome::Interrupted,
    };
    let mut checks = Vec::with_capacity(2);
    let payer = match caller {
        Caller::Site(site) => {
            let visitor = site_visitor(state, site, peer, headers)?;
            record.visitor = Some(visitor_hash(state, site, &visitor));
            record.site_id = Some(site.id.clone());
            checks.push((Subject::Site(site.id.clone()), rule(&site.settings.limits)));
            checks.push((
                Subject::Visitor { site: site.id.clone(), visitor: visitor.limit_key() },
                visitor_rule(state, site, &visitor),
            ));
            (Payer::Site(site.id.clone()), budget_rule(&site.settings.limits))
        }
        Caller::Key(key) => {
            record.key_id = Some(key.id.clone());
            checks.push((Subject::Key(key.id.clone()), rule(&key.limits)));
            (Payer::Key(key.id.clone()), budget_rule(&key.limits))
        }
    };
    checks.retain(|(_, rule)| !rule.is_unlimited());

    let metering = Arc::clone(&state.metering);
    let ceiling = Ceiling {
        prompt_tokens: prompt_token_ceiling(prompt_bytes(request), request.messages.len()),
        completion_tokens: u64::from(request.max_tokens.unwrap_or_default()),
    };
    // Whichever target answers, at its own model's price (or the requested model's, for a
    // target without one): the priciest is what may be spent.
    let worst_cost = route
        .targets
        .iter()
        .map(|target| {
            let model = match metering.prices.price(&target.model) {
                Some(_) => target.model.as_str(),
                None => record.model.as_str(),
            };
            metering.prices.cost(model, ceiling.prompt_tokens, ceiling.completion_tokens)
        })
        .max()
        .unwrap_or_default();
    // The worst case is charged to the tokens-per-minute windows too, so that concurrent
    // requests see each other; the difference is given back when the request settles.
    let reserved_tokens = ceiling.prompt_tokens.saturating_add(ceiling.completion_tokens);
    let claim = Claim { checks, tokens: reserved_tokens, payers: &[payer], cost: worst_cost };
    let pass = metering.admission.admit(claim).await.map_err(|r| refused(state, r))?;
    let status = pass.status.clone();
    let admitted = Admitted { pass, record, ceiling, worst_cost, labels };
    Ok((Meter::new(metering, admitted), status))
}
