//! The forms of the sites page: a new site, and a site's origins, widget, limits and visitor
//! verification. Each checks what it can before sending and shows the relay's error next to the
//! field it names (`"primary_color: ..."`), or under its section otherwise.

use confab_admin_api::{
    ClientInstructions, Grounding, LimitsPatch, NewSite, OriginsPatch, SiteLimits, SitePatch,
    SiteView, VerificationChange, WidgetPatch, WidgetSettings,
};
use leptos::ev;
use leptos::prelude::*;
use leptos::task::spawn_local;

use super::super::{AskTwice, FieldError};
use super::preview::WidgetPreview;
use crate::api::{self, ApiError};
use crate::input;

/// Errors by field name, shown next to their fields.
#[derive(Debug, Clone, Copy)]
struct Errors(RwSignal<Vec<(&'static str, String)>>);

impl Errors {
    fn new() -> Self {
        Self(RwSignal::new(Vec::new()))
    }

    fn of(self, field: &'static str) -> Signal<Option<String>> {
        Signal::derive(move || {
            self.0.with(|e| e.iter().find(|(f, _)| *f == field).map(|(_, m)| m.clone()))
        })
    }

    fn set(self, errors: Vec<(&'static str, String)>) {
        self.0.set(errors);
    }

    /// The relay's error next to the field it names, if that is one of `fields`; `false`
    /// otherwise (the caller shows it under the section).
    fn place(self, error: &ApiError, fields: &[&'static str]) -> bool {
        let named = input::error_field(&error.message)
            .and_then(|name| fields.iter().find(|f| **f == name).copied());
        if let Some(field) = named {
            self.0.set(vec![(field, error.message.clone())]);
        }
        named.is_some()
    }
}

/// `aria-invalid` for a field with an error.
fn invalid(error: Signal<Option<String>>) -> impl Fn() -> &'static str + Copy {
    move || if error.with(Option::is_some) { "true" } else { "false" }
}

/// The limits a site has, by the field names the admin API gives them; dollars for budgets.
const LIMIT_FIELDS: [(&str, &str, bool); 9] = [
    ("rpm", "Requests per minute", false),
    ("rpd", "Requests per day", false),
    ("tpm", "Tokens per minute", false),
    ("monthly_budget_micros", "Monthly budget ($)", true),
    ("daily_budget_micros", "Daily budget ($)", true),
    ("visitor_rpm", "Requests per minute, each visitor", false),
    ("visitor_rpd", "Requests per day, each visitor", false),
    ("verified_rpm", "Requests per minute, each verified visitor", false),
    ("verified_rpd", "Requests per day, each verified visitor", false),
];

fn limit_names() -> Vec<&'static str> {
    LIMIT_FIELDS.iter().map(|(name, _, _)| *name).collect()
}

/// What the limit fields hold, in [`LIMIT_FIELDS`]' order.
#[derive(Debug, Clone, Copy)]
struct LimitsInput([RwSignal<String>; 9]);

impl LimitsInput {
    fn new(limits: &SiteLimits) -> Self {
        let count = |n: Option<u32>| n.map(|n| n.to_string()).unwrap_or_default();
        let money = |n: Option<u64>| n.map(input::micros_to_dollars).unwrap_or_default();
        let texts = [
            count(limits.rpm),
            count(limits.rpd),
            count(limits.tpm),
            money(limits.monthly_budget_micros),
            money(limits.daily_budget_micros),
            count(limits.visitor_rpm),
            count(limits.visitor_rpd),
            count(limits.verified_rpm),
            count(limits.verified_rpd),
        ];
        Self(texts.map(RwSignal::new))
    }

    /// The limits typed, or an error for each field that is not one.
    fn read(&self) -> Result<SiteLimits, Vec<(&'static str, String)>> {
        let mut errors = Vec::new();
        let text = |i: usize| self.0[i].get_untracked();
        let mut count = |i: usize| {
            input::limit::<u32>(&text(i)).unwrap_or_else(|e| {
                errors.push((LIMIT_FIELDS[i].0, e));
                None
            })
        };
        let mut limits = SiteLimits {
            rpm: count(0),
            rpd: count(1),
            tpm: count(2),
            visitor_rpm: count(5),
            visitor_rpd: count(6),
            verified_rpm: count(7),
            verified_rpd: count(8),
            ..SiteLimits::default()
        };
        let mut money = |i: usize| {
            input::dollars_to_micros(&text(i)).unwrap_or_else(|e| {
                errors.push((LIMIT_FIELDS[i].0, e));
                None
            })
        };
        limits.monthly_budget_micros = money(3);
        limits.daily_budget_micros = money(4);
        if errors.is_empty() { Ok(limits) } else { Err(errors) }
    }
}

/// The nine limit fields, ids `{prefix}-{field}`; empty is no limit.
#[component]
fn LimitsFields(prefix: String, values: LimitsInput, errors: Errors) -> impl IntoView {
    LIMIT_FIELDS
        .iter()
        .zip(values.0)
        .map(|(&(name, label, money), value)| {
            let id = format!("{prefix}-{name}");
            let error_id = format!("{id}-error");
            let error = errors.of(name);
            view! {
                <div class="field">
                    <label for=id.clone()>{label}</label>
                    <input
                        id=id
                        inputmode=if money { "decimal" } else { "numeric" }
                        placeholder=if money { "no budget" } else { "no limit" }
                        aria-describedby=error_id.clone()
                        aria-invalid=invalid(error)
                        prop:value=move || value.get()
                        on:input=move |ev| value.set(event_target_value(&ev))
                    />
                    <FieldError id=error_id message=error />
                </div>
            }
        })
        .collect_view()
}

/// Client instructions as the select's value (their name in the API): empty for the relay's
/// default.
fn instructions_value(c: Option<ClientInstructions>) -> String {
    let name = c.and_then(|c| serde_json::to_value(c).ok());
    name.and_then(|n| n.as_str().map(str::to_owned)).unwrap_or_default()
}

/// The select's value as client instructions (`None`: the relay's default).
fn instructions_of(value: &str) -> Option<ClientInstructions> {
    serde_json::from_value(serde_json::Value::from(value)).ok()
}

/// Grounding as the select's value (its name in the API).
fn grounding_value(g: Grounding) -> String {
    let name = serde_json::to_value(g).ok();
    name.and_then(|n| n.as_str().map(str::to_owned)).unwrap_or_default()
}

/// How a site with knowledge answers: prefer its sources, or only them.
#[component]
fn GroundingSelect(id: String, value: RwSignal<String>) -> impl IntoView {
    let option = move |v: &'static str, text: &'static str| {
        view! { <option value=v selected=move || value.get() == v>{text}</option> }
    };
    view! {
        <label for=id.clone()>"Answers with knowledge"</label>
        <select id=id on:change=move |ev| value.set(event_target_value(&ev))>
            {option("prefer", "Prefer the site's sources, and cite them")}
            {option("strict", "Only from the site's sources")}
        </select>
    }
}

#[component]
fn InstructionsSelect(id: String, value: RwSignal<String>) -> impl IntoView {
    let option = move |v: &'static str, text: &'static str| {
        view! { <option value=v selected=move || value.get() == v>{text}</option> }
    };
    view! {
        <label for=id.clone()>"Client instructions"</label>
        <select id=id on:change=move |ev| value.set(event_target_value(&ev))>
            {option("", "The relay's default")}
            {option("layer", "Layer under the site's prompt")}
            {option("drop", "Drop them")}
            {option("reject", "Refuse the request")}
        </select>
    }
}

// ----- a new site ----------------------------------------------------------------------------

#[component]
pub fn NewSiteForm(created: Callback<SiteView>) -> impl IntoView {
    let name = RwSignal::new(String::new());
    let origins = RwSignal::new(String::new());
    let no_origin = RwSignal::new(false);
    let models = RwSignal::new(String::new());
    let prompt = RwSignal::new(String::new());
    let max_tokens = RwSignal::new(String::new());
    let temperature = RwSignal::new(String::new());
    let context = RwSignal::new(String::new());
    let instructions = RwSignal::new(String::new());
    let title = RwSignal::new(String::new());
    let limits = LimitsInput::new(&SiteLimits::default());
    let errors = Errors::new();
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    // After a creation, the form is empty again.
    let reset = move || {
        for text in [name, origins, models, prompt, max_tokens, temperature, context, title] {
            text.set(String::new());
        }
        instructions.set(String::new());
        no_origin.set(false);
        for value in limits.0 {
            value.set(String::new());
        }
    };

    let create = move |ev: ev::SubmitEvent| {
        ev.prevent_default();
        error.set(None);
        let mut problems = Vec::new();
        let mut whole = |field: &'static str, text: String| {
            input::limit::<u32>(&text).unwrap_or_else(|e| {
                problems.push((field, e.replace(" for no limit", " for the relay's default")));
                None
            })
        };
        let tokens = whole("max_tokens", max_tokens.get_untracked());
        let context_messages = whole("context_messages", context.get_untracked());
        let temperature_max = match input::optional(&temperature.get_untracked()) {
            None => None,
            Some(text) => match text.parse::<f32>() {
                Ok(t) if (0.0..=2.0).contains(&t) => Some(t),
                _ => {
                    problems.push(("temperature_max", "Enter a number from 0 to 2.".into()));
                    None
                }
            },
        };
        let limits = limits.read().unwrap_or_else(|e| {
            problems.extend(e);
            SiteLimits::default()
        });
        if !problems.is_empty() {
            errors.set(problems);
            return;
        }
        errors.set(Vec::new());
        let site = NewSite {
            name: name.get_untracked().trim().to_owned(),
            origins: input::list(&origins.get_untracked()),
            allow_no_origin: no_origin.get_untracked(),
            models: input::list(&models.get_untracked()),
            system_prompt: input::optional(&prompt.get_untracked()),
            max_tokens: tokens,
            temperature_max,
            context_messages,
            client_instructions: instructions_of(&instructions.get_untracked()),
            grounding: None,
            widget: WidgetSettings {
                title: input::optional(&title.get_untracked()),
                ..WidgetSettings::default()
            },
            limits,
        };
        busy.set(true);
        spawn_local(async move {
            match api::create_site(&site).await {
                Ok(site) => {
                    reset();
                    created.run(site);
                }
                Err(e) => {
                    let mut fields = limit_names();
                    fields.extend(["max_tokens", "temperature_max", "context_messages"]);
                    if !errors.place(&e, &fields) {
                        error.set(Some(e.message));
                    }
                }
            }
            busy.set(false);
        });
    };
    let number = move |id: &'static str,
                       label: &'static str,
                       field: &'static str,
                       value: RwSignal<String>| {
        let error = errors.of(field);
        let error_id = format!("{id}-error");
        view! {
            <div class="field">
                <label for=id>{label}</label>
                <input id=id inputmode="decimal" placeholder="the relay's default" aria-describedby=error_id.clone() aria-invalid=invalid(error) prop:value=move || value.get() on:input=move |ev| value.set(event_target_value(&ev)) />
                <FieldError id=error_id message=error />
            </div>
        }
    };

    view! {
        <section class="panel" aria-labelledby="new-site">
            <h2 id="new-site">"New site"</h2>
            <form on:submit=create class="stack">
                <label for="site-name">"Name"</label>
                <input id="site-name" required="" aria-describedby="site-error" prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev)) />
                <label for="site-origin">"Origin"</label>
                <textarea
                    id="site-origin"
                    rows="2"
                    placeholder="https://shop.example"
                    aria-describedby="site-origin-hint site-error"
                    prop:value=move || origins.get()
                    on:input=move |ev| origins.set(event_target_value(&ev))
                ></textarea>
                <p id="site-origin-hint" class="hint">"The addresses the widget runs on, one per line or separated by commas."</p>
                <label class="check">
                    <input type="checkbox" prop:checked=move || no_origin.get() on:change=move |ev| no_origin.set(event_target_checked(&ev)) />
                    "Also accept calls that send no Origin (native apps)"
                </label>
                <label for="site-models">"Models"</label>
                <input id="site-models" placeholder="the relay's default" aria-describedby="site-models-hint" prop:value=move || models.get() on:input=move |ev| models.set(event_target_value(&ev)) />
                <p id="site-models-hint" class="hint">"Separated by commas; the first is the site's default."</p>
                <label for="site-prompt">"System prompt"</label>
                <textarea id="site-prompt" rows="3" prop:value=move || prompt.get() on:input=move |ev| prompt.set(event_target_value(&ev))></textarea>
                <div class="grid">
                    {number("site-max-tokens", "Max tokens", "max_tokens", max_tokens)}
                    {number("site-temperature", "Temperature max", "temperature_max", temperature)}
                    {number("site-context", "Context messages", "context_messages", context)}
                </div>
                <InstructionsSelect id="site-instructions".into() value=instructions />
                <label for="site-title">"Widget title"</label>
                <input id="site-title" placeholder="the relay's default" prop:value=move || title.get() on:input=move |ev| title.set(event_target_value(&ev)) />
                <details class="section">
                    <summary>"Limits"</summary>
                    <div class="grid">
                        <LimitsFields prefix="new-site".into() values=limits errors />
                    </div>
                </details>
                <p id="site-error" class="field-error" role="alert">{move || error.get()}</p>
                <button type="submit" class="primary" disabled=move || busy.get()>"Create site"</button>
            </form>
        </section>
    }
}

// ----- a site's sections ---------------------------------------------------------------------

/// A section's status line: saved, or the error that is not a field's.
type Status = RwSignal<Option<Result<&'static str, String>>>;

/// How a section's call went: the site the relay answers replaces the card's, an error goes
/// next to the field it names (one of `fields`) or under the section.
fn settle(
    answer: Result<SiteView, ApiError>,
    status: Status,
    errors: Errors,
    fields: &[&'static str],
    changed: Callback<SiteView>,
) {
    match answer {
        Ok(site) => {
            status.set(Some(Ok("Saved.")));
            changed.run(site);
        }
        Err(e) => {
            if !errors.place(&e, fields) {
                status.set(Some(Err(e.message)));
            }
        }
    }
}

/// "Saved." as a status (`{id}`), an error as an alert (`{id}-error`, which the section's submit
/// button names in its `aria-describedby`).
#[component]
fn StatusLine(id: String, status: Status) -> impl IntoView {
    let error = Signal::derive(move || status.get().and_then(Result::err));
    view! {
        <p id=id.clone() role="status" class="ok">{move || status.get().and_then(Result::ok)}</p>
        <FieldError id=format!("{id}-error") message=error />
    }
}

#[component]
pub fn OriginsSection(site: RwSignal<SiteView>, changed: Callback<SiteView>) -> impl IntoView {
    let id = site.with_untracked(|s| s.id.clone());
    let add = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let send = move |patch: OriginsPatch| {
        error.set(None);
        let id = site.with_untracked(|s| s.id.clone());
        spawn_local(async move {
            match api::change_site_origins(&id, &patch).await {
                Ok(site) => {
                    add.set(String::new());
                    changed.run(site);
                }
                Err(e) => error.set(Some(e.message)),
            }
        });
    };
    let submit = move |ev: ev::SubmitEvent| {
        ev.prevent_default();
        let origins = input::list(&add.get_untracked());
        if origins.is_empty() {
            error.set(Some("Enter an origin such as https://shop.example.".into()));
            return;
        }
        send(OriginsPatch { add: origins, remove: Vec::new() });
    };
    let field = format!("{id}-add-origin");
    let error_id = format!("{field}-error");
    view! {
        <details class="section">
            <summary>"Origins"</summary>
            <ul class="origins">
                {move || site.with(|s| s.origins.clone()).into_iter().map(|origin| {
                    let label = format!("Remove {origin}");
                    let gone = origin.clone();
                    view! {
                        <li>
                            <code>{origin}</code>
                            <button type="button" aria-label=label on:click=move |_| send(OriginsPatch { add: Vec::new(), remove: vec![gone.clone()] })>
                                "Remove"
                            </button>
                        </li>
                    }
                }).collect_view()}
            </ul>
            <form class="inline" on:submit=submit>
                <label for=field.clone()>"Add origin"</label>
                <input
                    id=field
                    placeholder="https://shop.example"
                    aria-describedby=error_id.clone()
                    aria-invalid=move || if error.with(Option::is_some) { "true" } else { "false" }
                    prop:value=move || add.get()
                    on:input=move |ev| add.set(event_target_value(&ev))
                />
                <button type="submit">"Add"</button>
            </form>
            <FieldError id=error_id message=error />
        </details>
    }
}

#[component]
pub fn WidgetSection(site: RwSignal<SiteView>, changed: Callback<SiteView>) -> impl IntoView {
    let (id, widget, instructions, grounding) = site
        .with_untracked(|s| (s.id.clone(), s.widget.clone(), s.client_instructions, s.grounding));
    let title = RwSignal::new(widget.title.unwrap_or_default());
    let greeting = RwSignal::new(widget.greeting.unwrap_or_default());
    let suggestions = RwSignal::new(widget.suggestions.unwrap_or_default().join("\n"));
    let color = RwSignal::new(widget.primary_color.unwrap_or_default());
    let instructions = RwSignal::new(instructions_value(instructions));
    let grounding = RwSignal::new(grounding_value(grounding));
    let errors = Errors::new();
    let status: Status = RwSignal::new(None);

    let save = move |ev: ev::SubmitEvent| {
        ev.prevent_default();
        status.set(None);
        let list = input::lines(&suggestions.get_untracked());
        let colour = input::optional(&color.get_untracked());
        let mut problems = Vec::new();
        if list.len() > 6 {
            problems.push(("suggestion", "Give at most 6 suggested questions.".to_owned()));
        }
        if colour.as_deref().is_some_and(|c| !input::is_color(c)) {
            problems.push(("primary_color", "Enter a colour like #1a73e8 or #17e.".to_owned()));
        }
        errors.set(problems);
        if !errors.0.with_untracked(Vec::is_empty) {
            return;
        }
        let patch = SitePatch {
            widget: Some(WidgetPatch {
                title: Some(input::optional(&title.get_untracked())),
                greeting: Some(input::optional(&greeting.get_untracked())),
                suggestions: Some((!list.is_empty()).then_some(list)),
                primary_color: Some(colour),
            }),
            client_instructions: Some(instructions_of(&instructions.get_untracked())),
            grounding: serde_json::from_value(grounding.get_untracked().into()).ok(),
        };
        let id = site.with_untracked(|s| s.id.clone());
        spawn_local(async move {
            let fields = ["title", "greeting", "suggestion", "primary_color"];
            settle(api::change_site(&id, &patch).await, status, errors, &fields, changed);
        });
    };
    let text_field = move |name: &'static str,
                           label: &'static str,
                           value: RwSignal<String>,
                           multi: bool| {
        let field = format!("{id}-{name}");
        let error_id = format!("{field}-error");
        let error = errors.of(name);
        let control = if multi {
            view! { <textarea id=field.clone() rows="3" aria-describedby=error_id.clone() aria-invalid=invalid(error) prop:value=move || value.get() on:input=move |ev| value.set(event_target_value(&ev))></textarea> }.into_any()
        } else {
            view! { <input id=field.clone() aria-describedby=error_id.clone() aria-invalid=invalid(error) prop:value=move || value.get() on:input=move |ev| value.set(event_target_value(&ev)) /> }.into_any()
        };
        view! {
            <label for=field>{label}</label>
            {control}
            <FieldError id=error_id message=error />
        }
    };
    let status_id = format!("{}-widget-status", site.with_untracked(|s| s.id.clone()));

    view! {
        <details class="section">
            <summary>"Widget"</summary>
            <div class="split">
                <form class="stack" on:submit=save>
                    {text_field("title", "Title", title, false)}
                    {text_field("greeting", "Greeting", greeting, true)}
                    {text_field("suggestion", "Suggested questions (one per line)", suggestions, true)}
                    {text_field("primary_color", "Primary colour", color, false)}
                    <InstructionsSelect id=format!("{}-instructions", site.with_untracked(|s| s.id.clone())) value=instructions />
                    <GroundingSelect id=format!("{}-grounding", site.with_untracked(|s| s.id.clone())) value=grounding />
                    <p class="hint">"Empty fields use the relay's defaults."</p>
                    <div class="actions">
                        <button type="submit" class="primary" aria-describedby=format!("{status_id}-error")>"Save widget"</button>
                    </div>
                    <StatusLine id=status_id status />
                </form>
                <WidgetPreview title greeting suggestions color />
            </div>
        </details>
    }
}

#[component]
pub fn LimitsSection(site: RwSignal<SiteView>, changed: Callback<SiteView>) -> impl IntoView {
    let (id, limits) = site.with_untracked(|s| (s.id.clone(), s.limits));
    let values = LimitsInput::new(&limits);
    let errors = Errors::new();
    let status: Status = RwSignal::new(None);
    let save = move |ev: ev::SubmitEvent| {
        ev.prevent_default();
        status.set(None);
        let limits = match values.read() {
            Ok(limits) => limits,
            Err(problems) => return errors.set(problems),
        };
        errors.set(Vec::new());
        // Every field is sent: an empty one removes its limit.
        let patch = LimitsPatch {
            rpm: Some(limits.rpm),
            rpd: Some(limits.rpd),
            tpm: Some(limits.tpm),
            monthly_budget_micros: Some(limits.monthly_budget_micros),
            daily_budget_micros: Some(limits.daily_budget_micros),
            visitor_rpm: Some(limits.visitor_rpm),
            visitor_rpd: Some(limits.visitor_rpd),
            verified_rpm: Some(limits.verified_rpm),
            verified_rpd: Some(limits.verified_rpd),
        };
        let id = site.with_untracked(|s| s.id.clone());
        spawn_local(async move {
            let saved = api::change_site_limits(&id, &patch).await;
            settle(saved, status, errors, &limit_names(), changed);
        });
    };
    view! {
        <details class="section">
            <summary>"Limits"</summary>
            <form on:submit=save>
                <p class="hint">"Empty: no limit (for visitors, the relay's default). Budgets in dollars."</p>
                <div class="grid">
                    <LimitsFields prefix=id.clone() values errors />
                </div>
                <div class="actions">
                    <button type="submit" class="primary" aria-describedby=format!("{id}-limits-status-error")>"Save limits"</button>
                </div>
                <StatusLine id=format!("{id}-limits-status") status />
            </form>
        </details>
    }
}

#[component]
pub fn VerificationSection(site: RwSignal<SiteView>, changed: Callback<SiteView>) -> impl IntoView {
    let (id, verification) = site.with_untracked(|s| (s.id.clone(), s.verification.clone()));
    let required = RwSignal::new(verification.required);
    let mode = RwSignal::new(verification.mode.clone());
    let secret = RwSignal::new(None::<String>);
    let status: Status = RwSignal::new(None);
    let send = move |change: VerificationChange| {
        status.set(None);
        let id = site.with_untracked(|s| s.id.clone());
        spawn_local(async move {
            match api::change_verification(&id, &change).await {
                Ok(mut view) => {
                    secret.set(view.visitor_secret.take());
                    required.set(view.verification.required);
                    mode.set(view.verification.mode.clone());
                    status.set(Some(Ok("Saved.")));
                    changed.run(view);
                }
                Err(e) => status.set(Some(Err(e.message))),
            }
        });
    };
    let save = move |ev: ev::SubmitEvent| {
        ev.prevent_default();
        send(VerificationChange {
            required: Some(required.get_untracked()),
            mode: Some(mode.get_untracked()),
            ..VerificationChange::default()
        });
    };
    let new_secret =
        move |_| send(VerificationChange { new_secret: true, ..VerificationChange::default() });
    let off = Callback::new(move |()| {
        send(VerificationChange { off: true, ..VerificationChange::default() })
    });
    let state = move || {
        site.with(|s| {
            let v = &s.verification;
            match (v.enabled, v.required) {
                (false, _) => "Off: no visitor secret, visitor tokens are not accepted.".to_owned(),
                (true, false) => format!(
                    "On ({}): verified visitors get their own limits; others are served too.",
                    v.mode
                ),
                (true, true) => {
                    format!("Required ({}): visitors without a valid token are refused.", v.mode)
                }
            }
        })
    };
    let mode_id = format!("{id}-mode");
    let option = move |v: &'static str| view! { <option value=v selected=move || mode.get() == v>{v}</option> };
    view! {
        <details class="section">
            <summary>"Verification"</summary>
            <p data-verification="">{state}</p>
            {move || secret.get().map(|s| view! {
                <div class="reveal" role="status">
                    <p>"The new visitor secret, shown this once (your server signs visitor tokens with it):"</p>
                    <pre><code data-visitor-secret="">{s}</code></pre>
                </div>
            })}
            <form on:submit=save>
                <label class="check">
                    <input type="checkbox" prop:checked=move || required.get() on:change=move |ev| required.set(event_target_checked(&ev)) />
                    "Refuse visitors without a valid token"
                </label>
                <label for=mode_id.clone()>"Token form"</label>
                <select id=mode_id on:change=move |ev| mode.set(event_target_value(&ev))>
                    {option("hmac")}
                    {option("jwt")}
                </select>
                <div class="actions">
                    <button type="submit" class="primary" aria-describedby=format!("{id}-verification-status-error")>"Save verification"</button>
                    <button type="button" on:click=new_secret>"Make a new visitor secret"</button>
                    <Show when=move || site.with(|s| s.verification.enabled)>
                        <AskTwice label="Remove the secret" confirm="Confirm: turn verification off" action=off />
                    </Show>
                </div>
                <StatusLine id=format!("{id}-verification-status") status />
            </form>
        </details>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_instructions_go_to_and_from_the_select_by_their_api_name() {
        assert_eq!(instructions_value(Some(ClientInstructions::Reject)), "reject");
        assert_eq!(instructions_value(None), "");
        assert_eq!(instructions_of("drop"), Some(ClientInstructions::Drop));
        assert_eq!(instructions_of(""), None);
        assert_eq!(grounding_value(Grounding::Strict), "strict");
        assert_eq!(grounding_value(Grounding::Prefer), "prefer");
    }

    #[test]
    fn budgets_typed_in_dollars_are_read_as_micro_dollars_and_bad_fields_named() {
        let owner = Owner::new();
        owner.with(|| {
            let values = LimitsInput::new(&SiteLimits {
                daily_budget_micros: Some(2_500_000),
                ..SiteLimits::default()
            });
            assert_eq!(values.0[4].get_untracked(), "2.5");
            values.0[0].set("60".into());
            values.0[3].set("$10".into());
            let limits = values.read().unwrap();
            assert_eq!((limits.rpm, limits.monthly_budget_micros), (Some(60), Some(10_000_000)));
            values.0[1].set("1.5".into());
            values.0[4].set("ten".into());
            let errors = values.read().unwrap_err();
            assert_eq!(
                errors.iter().map(|e| e.0).collect::<Vec<_>>(),
                ["rpd", "daily_budget_micros"]
            );
        });
    }
}
