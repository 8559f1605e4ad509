//! Creating and re-keying sites: the rules shared by the CLI and (later) the admin API.

use crate::config::{Config, is_hex_color};
use crate::keys::check_limits;
use crate::sitekey::{KeyKind, NewKey};
use crate::store::conversations::MAX_RETENTION_DAYS;
use crate::store::{
    CallerLimits, ConversationSettings, NewSite, Site, SiteSettings, SiteWidget, Store, StoreError,
    VisitorLimits,
};

/// What an operator asks for when creating a site: the settings the site will have, before
/// `create_site` checks and normalises them (there, empty `models` means the first model the
/// relay serves).
pub type SiteSpec = SiteSettings;

#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &'static str, problem: impl Into<String>) -> SiteError {
    SiteError::Invalid { field, problem: problem.into() }
}

/// Zero limits would lock a site (or its visitors) out; that is what deleting is for.
fn validate_site_limits(limits: &CallerLimits, visitors: &VisitorLimits) -> Result<(), SiteError> {
    check_limits(limits).map_err(|(field, problem)| invalid(field, problem))?;
    for (field, value) in [
        ("visitor_rpm", visitors.rpm),
        ("visitor_rpd", visitors.rpd),
        ("verified_rpm", visitors.verified_rpm),
        ("verified_rpd", visitors.verified_rpd),
    ] {
        if value == Some(0) {
            return Err(invalid(field, "must be at least 1 (leave it out for the default)"));
        }
    }
    Ok(())
}

/// A change to one optional setting: keep what it is, clear it (unlimited, or the config's
/// default), or set it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Change<T> {
    #[default]
    Keep,
    Clear,
    Set(T),
}

impl<T> Change<T> {
    /// `Set` for a value, `Clear` for none: what a full replacement says about one setting.
    pub fn replacing(value: Option<T>) -> Self {
        value.map_or(Change::Clear, Change::Set)
    }

    /// The setting after this change.
    pub fn apply(self, current: Option<T>) -> Option<T> {
        match self {
            Change::Keep => current,
            Change::Clear => None,
            Change::Set(value) => Some(value),
        }
    }
}

/// What to change about a site's limits and budgets; what is not mentioned keeps its value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitsChange {
    pub rpm: Change<u32>,
    pub rpd: Change<u32>,
    pub tpm: Change<u32>,
    pub monthly_budget_micros: Change<u64>,
    pub daily_budget_micros: Change<u64>,
    pub visitor_rpm: Change<u32>,
    pub visitor_rpd: Change<u32>,
    pub verified_rpm: Change<u32>,
    pub verified_rpd: Change<u32>,
}

impl LimitsChange {
    /// Every limit replaced: the given ones set, the others cleared.
    pub fn replacing(limits: CallerLimits, visitors: VisitorLimits) -> Self {
        Self {
            rpm: Change::replacing(limits.rpm),
            rpd: Change::replacing(limits.rpd),
            tpm: Change::replacing(limits.tpm),
            monthly_budget_micros: Change::replacing(limits.monthly_budget_micros),
            daily_budget_micros: Change::replacing(limits.daily_budget_micros),
            visitor_rpm: Change::replacing(visitors.rpm),
            visitor_rpd: Change::replacing(visitors.rpd),
            verified_rpm: Change::replacing(visitors.verified_rpm),
            verified_rpd: Change::replacing(visitors.verified_rpd),
        }
    }

    /// The limits after this change.
    pub fn apply(
        &self,
        limits: CallerLimits,
        visitors: VisitorLimits,
    ) -> (CallerLimits, VisitorLimits) {
        (
            CallerLimits {
                rpm: self.rpm.apply(limits.rpm),
                rpd: self.rpd.apply(limits.rpd),
                tpm: self.tpm.apply(limits.tpm),
                monthly_budget_micros: self
                    .monthly_budget_micros
                    .apply(limits.monthly_budget_micros),
                daily_budget_micros: self.daily_budget_micros.apply(limits.daily_budget_micros),
            },
            VisitorLimits {
                rpm: self.visitor_rpm.apply(visitors.rpm),
                rpd: self.visitor_rpd.apply(visitors.rpd),
                verified_rpm: self.verified_rpm.apply(visitors.verified_rpm),
                verified_rpd: self.verified_rpd.apply(visitors.verified_rpd),
            },
        )
    }
}

/// Changes a site's limits and budgets: what `change` does not mention keeps its value, so
/// setting one limit never removes a budget. Returns the site as changed, `None` when there is
/// no such site.
pub async fn update_limits(
    store: &dyn Store,
    id: &str,
    change: &LimitsChange,
) -> Result<Option<Site>, SiteError> {
    let Some(site) = store.site(id).await? else { return Ok(None) };
    let (limits, visitor_limits) = change.apply(site.settings.limits, site.settings.visitor_limits);
    validate_site_limits(&limits, &visitor_limits)?;
    if !store.set_site_limits(id, &limits, &visitor_limits).await? {
        return Ok(None);
    }
    Ok(store.site(id).await?)
}

/// Adds and removes origins of a site, normalised and checked as at creation. Removing an
/// origin the site does not list is refused (a typo must not look like success), and so is
/// removing the last one of a site that does not accept calls without an `Origin`: its key would
/// work nowhere, which is what deleting the site is for. Returns the site as changed, `None`
/// when there is no such site.
pub async fn change_origins(
    store: &dyn Store,
    id: &str,
    add: &[String],
    remove: &[String],
) -> Result<Option<Site>, SiteError> {
    if add.is_empty() && remove.is_empty() {
        return Err(invalid("origin", "give an origin to add or to remove"));
    }
    let normalize = |origins: &[String]| -> Result<Vec<String>, SiteError> {
        origins
            .iter()
            .map(|origin| normalize_origin(origin).map_err(|problem| invalid("origin", problem)))
            .collect()
    };
    let (add, remove) = (normalize(add)?, normalize(remove)?);
    let Some(site) = store.site(id).await? else { return Ok(None) };
    let listed = &site.settings.origins;
    let mut origins = listed.clone();
    for origin in &remove {
        if !origins.contains(origin) {
            return Err(invalid(
                "origin",
                format!(
                    "`{origin}` is not an origin of site {id} (it lists: {})",
                    if listed.is_empty() { "none".into() } else { listed.join(", ") }
                ),
            ));
        }
        origins.retain(|o| o != origin);
    }
    for origin in add {
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    if origins.is_empty() && !site.settings.allow_no_origin {
        return Err(invalid(
            "origin",
            format!(
                "cannot remove the last origin of site {id}: its key would work from nowhere \
                 (add another origin first, or delete the site)"
            ),
        ));
    }
    if !store.set_site_origins(id, &origins).await? {
        return Ok(None);
    }
    Ok(store.site(id).await?)
}

/// What to change about a site's visitor verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerificationChange {
    /// Make a new visitor secret (the old one, if any, stops verifying at once).
    pub new_secret: bool,
    /// Remove the secret: tokens are no longer accepted, nothing is required.
    pub off: bool,
    /// Refuse (`Some(true)`) or accept (`Some(false)`) unverified visitors.
    pub required: Option<bool>,
    /// Accept this form of token from now on. On a site that has a secret, a change of form needs
    /// `new_secret` too: a secret whose tokens were issued in one form must never verify the
    /// other (see `visitor::TokenMode`).
    pub mode: Option<crate::visitor::TokenMode>,
}

/// Applies `change`; returns the site and, for a new secret, the secret (shown once).
pub async fn change_verification(
    store: &dyn Store,
    id: &str,
    change: VerificationChange,
) -> Result<Option<(Site, Option<crate::visitor::VisitorSecret>)>, SiteError> {
    let Some(site) = store.site(id).await? else { return Ok(None) };
    let mut verification = site.verification.clone();
    let mut fresh = None;
    if change.off {
        verification = crate::store::Verification::default();
    }
    if let Some(mode) = change.mode {
        if verification.secret.is_some() && mode != verification.mode && !change.new_secret {
            return Err(invalid(
                "mode",
                format!(
                    "changing the visitor token mode from {} to {mode} needs a new secret \
                     (add --new-secret): a secret that signed tokens of one form must never \
                     verify the other",
                    verification.mode
                ),
            ));
        }
        verification.mode = mode;
    }
    if change.new_secret {
        let secret = crate::visitor::new_visitor_secret();
        verification.secret = Some(secret.reveal().to_owned());
        fresh = Some(secret);
    }
    if let Some(required) = change.required {
        verification.required = required;
    }
    if verification.required && verification.secret.is_none() {
        return Err(invalid(
            "verification",
            "cannot require verified visitors without a visitor secret (make one first)",
        ));
    }
    store.set_site_verification(id, &verification).await?;
    let site = store.site(id).await?.unwrap_or(site);
    Ok(Some((site, fresh)))
}

/// Gives a site a new key (shown once); the current one keeps working for `grace`, or stops at
/// once when that is zero. `None` when there is no such site.
pub async fn rekey_site(
    store: &dyn Store,
    id: &str,
    grace: std::time::Duration,
) -> Result<Option<CreatedSite>, SiteError> {
    let key = NewKey::generate(KeyKind::Site);
    let previous_expires_at = (!grace.is_zero()).then(|| {
        let grace = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
        crate::unix_now_i64().saturating_add(grace)
    });
    if !store.rekey_site(id, &key.lookup_id, &key.hash, previous_expires_at).await? {
        return Ok(None);
    }
    Ok(store.site(id).await?.map(|site| CreatedSite { site, key }))
}

/// A site just created, with its key, which is shown once and never again.
#[derive(Debug)]
pub struct CreatedSite {
    pub site: Site,
    pub key: NewKey,
}

/// Validates the spec against the config, normalises it, and creates the site with a fresh key.
pub async fn create_site(
    store: &dyn Store,
    config: &Config,
    mut spec: SiteSpec,
    is_demo: bool,
) -> Result<CreatedSite, SiteError> {
    spec.name = spec.name.trim().to_owned();
    if spec.name.is_empty() {
        return Err(invalid("name", "must not be empty"));
    }
    if spec.origins.is_empty() && !spec.allow_no_origin {
        return Err(invalid(
            "origin",
            "give at least one origin (or allow origin-less calls for native apps)",
        ));
    }
    let mut origins = Vec::with_capacity(spec.origins.len());
    for origin in &spec.origins {
        let origin = normalize_origin(origin).map_err(|problem| invalid("origin", problem))?;
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    spec.origins = origins;
    let served = config.served_models();
    if spec.models.is_empty() {
        spec.models.extend(served.first().cloned());
    }
    for model in &spec.models {
        if !served.contains(model) {
            return Err(invalid(
                "model",
                format!(
                    "`{model}` is not served by any configured upstream (served: {})",
                    served.join(", ")
                ),
            ));
        }
    }
    if spec.max_tokens == Some(0) {
        return Err(invalid("max_tokens", "must be at least 1"));
    }
    if let Some(t) = spec.temperature_max
        && !(0.0..=2.0).contains(&t)
    {
        return Err(invalid("temperature_max", "must be between 0 and 2"));
    }
    if spec.context_messages == Some(0) {
        return Err(invalid("context_messages", "must be at least 1"));
    }
    spec.widget = validate_widget(std::mem::take(&mut spec.widget))?;
    validate_site_limits(&spec.limits, &spec.visitor_limits)?;
    spec.system_prompt = spec.system_prompt.filter(|p| !p.trim().is_empty());
    let key = NewKey::generate(KeyKind::Site);
    let site = store
        .create_site(NewSite {
            settings: spec,
            is_demo,
            key_lookup_id: key.lookup_id.clone(),
            key_hash: key.hash,
        })
        .await?;
    Ok(CreatedSite { site, key })
}

/// Replaces a site's widget settings after checking them; `Ok(false)` when there is no such site.
pub async fn update_widget(
    store: &dyn Store,
    id: &str,
    widget: SiteWidget,
) -> Result<bool, SiteError> {
    let widget = validate_widget(widget)?;
    Ok(store.set_site_widget(id, &widget).await?)
}

/// Trims the texts, drops empty ones, and checks lengths and the colour (it ends up in CSS).
fn validate_widget(widget: SiteWidget) -> Result<SiteWidget, SiteError> {
    let text = |value: Option<String>, field: &'static str, max: usize| {
        let value = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        match value {
            Some(v) if v.chars().count() > max => {
                Err(invalid(field, format!("must be at most {max} characters")))
            }
            other => Ok(other),
        }
    };
    let title = text(widget.title, "title", 80)?;
    let greeting = text(widget.greeting, "greeting", 500)?;
    let suggestions = match widget.suggestions {
        Some(list) => {
            let mut kept = Vec::with_capacity(list.len());
            for suggestion in list {
                kept.extend(text(Some(suggestion), "suggestion", 120)?);
            }
            if kept.len() > 6 {
                return Err(invalid("suggestion", "give at most 6 suggested questions"));
            }
            Some(kept)
        }
        None => None,
    };
    let primary_color = widget.primary_color.map(|c| c.trim().to_ascii_lowercase());
    if let Some(color) = &primary_color
        && !is_hex_color(color)
    {
        return Err(invalid("primary_color", "must be a colour like #1a73e8 or #17e"));
    }
    Ok(SiteWidget { title, greeting, suggestions, primary_color })
}

/// A change to a site's conversation settings: what is `None` (or `Keep`) stays as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConversationsChange {
    pub transcripts: Option<bool>,
    pub retention_days: Option<u32>,
    pub mask_contacts: Option<bool>,
    /// `Clear`: the relay's default notice.
    pub notice: Change<String>,
    pub handoff: Option<bool>,
}

impl ConversationsChange {
    /// The settings after this change, checked.
    pub fn apply(self, current: &ConversationSettings) -> Result<ConversationSettings, SiteError> {
        let notice = match self.notice {
            Change::Keep => current.notice.clone(),
            Change::Clear => None,
            Change::Set(text) => {
                let text = text.trim().to_owned();
                if text.is_empty() {
                    None
                } else if text.chars().count() > 300 {
                    return Err(invalid("notice", "must be at most 300 characters"));
                } else if text.chars().any(char::is_control) {
                    return Err(invalid("notice", "must be one line without control characters"));
                } else {
                    Some(text)
                }
            }
        };
        let settings = ConversationSettings {
            transcripts: self.transcripts.unwrap_or(current.transcripts),
            retention_days: self.retention_days.unwrap_or(current.retention_days),
            mask_contacts: self.mask_contacts.unwrap_or(current.mask_contacts),
            notice,
            handoff: self.handoff.unwrap_or(current.handoff),
        };
        if !(1..=MAX_RETENTION_DAYS).contains(&settings.retention_days) {
            return Err(invalid(
                "retention_days",
                format!("must be from 1 to {MAX_RETENTION_DAYS} days"),
            ));
        }
        if settings.handoff && !settings.transcripts {
            return Err(invalid(
                "handoff",
                "needs transcripts on: the person who takes over reads the conversation",
            ));
        }
        Ok(settings)
    }
}

/// Changes a site's conversation settings; `Ok(None)` when there is no such site.
pub async fn change_conversations(
    store: &dyn Store,
    id: &str,
    change: ConversationsChange,
) -> Result<Option<Site>, SiteError> {
    let Some(site) = store.site(id).await? else { return Ok(None) };
    let settings = change.apply(&site.settings.conversations)?;
    if !store.set_site_conversations(id, &settings).await? {
        return Ok(None);
    }
    Ok(store.site(id).await?)
}

/// The demo site for `public_url`: created on first start, and on every later start re-keyed
/// (its key is printed and embedded in the demo page, and only a hash of it is ever stored) and
/// moved to the origin of the current public URL, which changes with `--listen`.
pub async fn ensure_demo_site(
    store: &dyn Store,
    config: &Config,
    public_url: &str,
) -> Result<CreatedSite, SiteError> {
    let origin = url::Url::parse(public_url)
        .map(|url| url.origin().ascii_serialization())
        .map_err(|e| invalid("public_url", format!("`{public_url}` is not a valid URL ({e})")))?;
    let existing = store.list_sites().await?.into_iter().find(|s| s.is_demo);
    match existing {
        Some(site) => {
            let key = NewKey::generate(KeyKind::Site);
            store.rekey_site(&site.id, &key.lookup_id, &key.hash, None).await?;
            store.set_site_origins(&site.id, std::slice::from_ref(&origin)).await?;
            let site = store.site(&site.id).await?.unwrap_or(site);
            Ok(CreatedSite { site, key })
        }
        None => {
            let spec = SiteSpec {
                name: "Demo".into(),
                origins: vec![origin],
                system_prompt: Some(
                    "You are the Confab demo assistant. Answer briefly and kindly.".into(),
                ),
                widget: SiteWidget {
                    title: Some("Confab demo".into()),
                    greeting: Some(
                        "Hi! I'm the Confab demo. My answers are canned until a real model is \
                         configured, but everything else is the real thing."
                            .into(),
                    ),
                    suggestions: Some(vec![
                        "What is Confab?".into(),
                        "How do I add you to my site?".into(),
                    ]),
                    primary_color: None,
                },
                ..SiteSpec::default()
            };
            create_site(store, config, spec, true).await
        }
    }
}

/// `https://Shop.Example:443/` becomes `https://shop.example`: scheme, host and non-default port,
/// exactly as browsers send them in `Origin`.
pub fn normalize_origin(value: &str) -> Result<String, String> {
    let url = url::Url::parse(value.trim()).map_err(|e| {
        format!("`{value}` is not a valid origin ({e}); write it like https://shop.example")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{value}` must start with http:// or https://"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "`{value}` must be an origin only (scheme, host and port), without a path"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("`{value}` must not contain credentials"));
    }
    Ok(url.origin().ascii_serialization())
}

/// A site as the CLI (`--json`) and the admin API show it: never its key, only its public
/// prefix.
pub fn site_view(site: &Site) -> serde_json::Value {
    let settings = &site.settings;
    serde_json::json!({
        "id": site.id,
        "name": settings.name,
        "key_prefix": crate::sitekey::public_prefix(&site.key_lookup_id),
        "previous_key_prefix": site.previous_key_lookup_id.as_deref().map(crate::sitekey::public_prefix),
        "previous_key_expires_at": site.previous_key_expires_at.map(crate::rfc3339),
        "origins": settings.origins,
        "allow_no_origin": settings.allow_no_origin,
        "models": settings.models,
        "system_prompt": settings.system_prompt,
        "max_tokens": settings.max_tokens,
        "temperature_max": settings.temperature_max,
        "context_messages": settings.context_messages,
        "client_instructions": settings.client_instructions.map(|c| c.as_str()),
        "grounding": settings.grounding.as_str(),
        "widget": {
            "title": settings.widget.title,
            "greeting": settings.widget.greeting,
            "suggestions": settings.widget.suggestions,
            "primary_color": settings.widget.primary_color,
        },
        "limits": {
            "rpm": settings.limits.rpm,
            "rpd": settings.limits.rpd,
            "tpm": settings.limits.tpm,
            "monthly_budget_micros": settings.limits.monthly_budget_micros,
            "daily_budget_micros": settings.limits.daily_budget_micros,
            "visitor_rpm": settings.visitor_limits.rpm,
            "visitor_rpd": settings.visitor_limits.rpd,
            "verified_rpm": settings.visitor_limits.verified_rpm,
            "verified_rpd": settings.visitor_limits.verified_rpd,
        },
        "conversations": {
            "transcripts": settings.conversations.transcripts,
            "retention_days": settings.conversations.retention_days,
            "mask_contacts": settings.conversations.mask_contacts,
            "notice": settings.conversations.notice,
            "handoff": settings.conversations.handoff,
        },
        "verification": {
            "enabled": site.verification.secret.is_some(),
            "required": site.verification.required,
            "mode": site.verification.mode.as_str(),
        },
        "created_at": crate::rfc3339(site.created_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalized_as_browsers_send_them() {
        assert_eq!(normalize_origin("https://Shop.Example:443/").unwrap(), "https://shop.example");
        assert_eq!(normalize_origin("http://127.0.0.1:8080").unwrap(), "http://127.0.0.1:8080");
        assert!(normalize_origin("https://shop.example/path").is_err());
        assert!(normalize_origin("ftp://shop.example").is_err());
        assert!(normalize_origin("shop.example").is_err());
    }
}

/// Property tests of origin normalisation: it never panics, and what it returns is an origin
/// it returns unchanged (so a stored origin compares equal to the browser's `Origin` header).
#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

    /// Text shaped like an origin, with its parts chosen to reach the parser's corners: IDNs,
    /// IPv6 literals, ports, credentials, paths, percent-escapes, odd schemes.
    fn origin_like() -> impl Strategy<Value = String> {
        let scheme = prop_oneof![
            Just("https://"),
            Just("http://"),
            Just("HTTP://"),
            Just("ftp://"),
            Just("javascript:"),
            Just("file:///"),
            Just(""),
        ];
        let host = prop_oneof![
            Just("Shop.Example".to_owned()),
            Just("bücher.example".to_owned()),
            Just("xn--bcher-kva.example".to_owned()),
            Just("[::1]".to_owned()),
            Just("[::ffff:127.0.0.1]".to_owned()),
            Just("127.0.0.1".to_owned()),
            Just("0x7f.1".to_owned()),
            Just("user:pass@shop.example".to_owned()),
            Just("%73hop.example".to_owned()),
            Just("shop.example.".to_owned()),
            "[a-z0-9.-]{0,20}",
            any::<String>(),
        ];
        let port = prop_oneof![
            Just(""),
            Just(":443"),
            Just(":80"),
            Just(":8080"),
            Just(":65536"),
            Just(":"),
        ];
        let tail =
            prop_oneof![Just(""), Just("/"), Just("/path"), Just("?q"), Just("#f"), Just(" ")];
        (scheme, host, port, tail)
            .prop_map(|(scheme, host, port, tail)| format!("{scheme}{host}{port}{tail}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn normalising_any_text_never_panics(text in any::<String>()) {
            let _ = normalize_origin(&text);
        }

        #[test]
        fn a_normalised_origin_normalises_to_itself(text in origin_like()) {
            if let Ok(origin) = normalize_origin(&text) {
                prop_assert_eq!(normalize_origin(&origin), Ok(origin.clone()), "from {:?}", text);
                prop_assert!(origin.starts_with("http://") || origin.starts_with("https://"));
            }
        }
    }
}
