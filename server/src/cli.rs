//! The command line: `confab serve`, `confab sites ...`, `confab keys ...`, `confab knowledge
//! ...` and the rest.

mod conversations;
mod keys;
mod knowledge;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use tokio::net::TcpListener;

use crate::config::{ClientInstructions, Config, ConfigSources, LogFormat};
use crate::http::{AppState, DemoPage, serve, serve_admin, serve_metrics};
use crate::sitekey::public_prefix;
use crate::sites::{self, CreatedSite, SiteSpec};
use crate::store::{CallerLimits, Grounding, Site, SiteSettings, SiteWidget, Store, VisitorLimits};
use crate::visitor::TokenMode;

/// Confab: an AI chat assistant on any website, behind a relay that keeps the provider key.
/// `layer`, `drop` or `reject`, listed in `--help` and in the error for anything else.
fn client_instructions_parser() -> impl clap::builder::TypedValueParser<Value = ClientInstructions>
{
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["layer", "drop", "reject"])
        .map(|name| ClientInstructions::from_name(&name).unwrap_or_default())
}

/// `prefer` or `strict`, listed in `--help` and in the error for anything else.
fn grounding_parser() -> impl clap::builder::TypedValueParser<Value = Grounding> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["prefer", "strict"])
        .map(|name| Grounding::from_name(&name).unwrap_or_default())
}

#[derive(Debug, Parser)]
#[command(name = "confab", version, about)]
pub struct Cli {
    /// Configuration file [default: confab.toml when it exists].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Database URL [default: sqlite://confab.db].
    #[arg(long, global = true, value_name = "URL")]
    pub database: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the relay.
    Serve(ServeArgs),
    /// Manage the websites allowed to use the relay.
    #[command(subcommand)]
    Sites(SitesCommand),
    /// Manage secret API keys for server-side callers.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Show usage: totals and a per-day series by site, key and model.
    Usage(UsageArgs),
    /// Conversations kept for sites with transcripts on: list, show, delete, erase a visitor.
    #[command(subcommand)]
    Conversations(conversations::ConversationsCommand),
    /// A site's knowledge, which its assistant answers from: add files, directories, pages and
    /// sitemaps; list, remove, refresh.
    #[command(subcommand)]
    Knowledge(knowledge::KnowledgeCommand),
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// How many days back (today included), 1 to 366.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=366))]
    pub days: u32,
    /// Only this site's usage.
    #[arg(long, value_name = "ID")]
    pub site: Option<String>,
    /// Only this key's usage.
    #[arg(long, value_name = "ID")]
    pub key: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub enum SitesCommand {
    /// Create a site and print its publishable site key (shown once).
    Create(CreateSiteArgs),
    /// List sites.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one site.
    Show {
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change what the widget shows for a site, and what happens to its visitors' own
    /// instructions (options not given stay as they are).
    Update {
        id: String,
        #[command(flatten)]
        widget: WidgetArgs,
        /// What happens to a visitor's own system/developer messages: layer, drop or reject.
        #[arg(long, value_parser = client_instructions_parser())]
        client_instructions: Option<ClientInstructions>,
        /// How the site answers once it has knowledge: prefer its sources, or answer strictly
        /// from them (saying when they do not cover a question).
        #[arg(long, value_parser = grounding_parser())]
        grounding: Option<Grounding>,
        /// Remove the site's suggested questions (the [widget] default applies again).
        #[arg(long, conflicts_with = "suggestions")]
        no_suggestions: bool,
        #[command(flatten)]
        conversations: conversations::SettingsArgs,
    },
    /// Change a site's limits and budgets. Options not given keep their current value;
    /// `--clear LIMIT` removes one (unlimited again, or the [visitors] default for visitor
    /// limits).
    Limits {
        id: String,
        #[command(flatten)]
        limits: SiteLimitArgs,
        /// Remove this limit or budget (repeatable): rpm, rpd, tpm, monthly-budget,
        /// daily-budget, visitor-rpm, visitor-rpd, verified-rpm, verified-rpd.
        #[arg(long = "clear", value_name = "LIMIT")]
        clear: Vec<LimitName>,
    },
    /// Add or remove origins the site's key may be used from (normalised like at creation).
    Origins {
        id: String,
        /// An origin to add, like https://shop.example (repeatable).
        #[arg(long = "add", value_name = "ORIGIN")]
        add: Vec<String>,
        /// An origin to remove (repeatable). The last one cannot be removed unless the site
        /// allows calls without an Origin.
        #[arg(long = "remove", value_name = "ORIGIN")]
        remove: Vec<String>,
    },
    /// Verified visitors: make the site's visitor secret (for the tokens its backend signs),
    /// require verification, or turn it off.
    Verification {
        id: String,
        /// Make a new visitor secret (shown once); tokens signed with the old one stop working.
        #[arg(long)]
        new_secret: bool,
        /// Refuse visitors without a valid visitor token.
        #[arg(long, conflicts_with = "allow_unverified")]
        require: bool,
        /// Accept visitors without a token again (with the anonymous limits).
        #[arg(long)]
        allow_unverified: bool,
        /// Remove the secret: visitor tokens are no longer accepted.
        #[arg(long, conflicts_with_all = ["new_secret", "require", "mode"])]
        off: bool,
        /// The one form of visitor token the site's backend issues: `hmac` (hmac.<user
        /// id>.<hash>, the default) or `jwt` (HS256). Tokens of the other form are refused.
        /// Changing it on a site with a secret needs --new-secret.
        #[arg(long, value_name = "hmac|jwt")]
        mode: Option<TokenMode>,
    },
    /// Give a site a new key (shown once); the old one keeps working for a grace period, so the
    /// pages that embed it can be updated first.
    Rekey {
        id: String,
        /// How long the old key keeps working, in seconds; 0 stops it at once
        /// [default: keys.rotation_grace_secs].
        #[arg(long, value_name = "SECS")]
        grace: Option<u64>,
        /// Print one JSON object (with `id` and `key`).
        #[arg(long)]
        json: bool,
    },
    /// Delete a site; its key stops working at once.
    Delete { id: String },
}

/// Request limits and budgets of a caller (a secret key, or a whole site).
#[derive(Debug, Args)]
pub struct CallerLimitArgs {
    /// Requests per minute [default: unlimited].
    #[arg(long)]
    pub rpm: Option<u32>,
    /// Requests per day [default: unlimited].
    #[arg(long)]
    pub rpd: Option<u32>,
    /// Tokens (prompt and answer) per minute [default: unlimited].
    #[arg(long)]
    pub tpm: Option<u32>,
    /// Spending limit per calendar month (UTC), in US dollars, like 25 or 12.50.
    #[arg(long, value_name = "USD", value_parser = keys::parse_usd)]
    pub monthly_budget: Option<u64>,
    /// Spending limit per day (UTC), in US dollars.
    #[arg(long, value_name = "USD", value_parser = keys::parse_usd)]
    pub daily_budget: Option<u64>,
}

impl CallerLimitArgs {
    fn limits(&self) -> CallerLimits {
        CallerLimits {
            rpm: self.rpm,
            rpd: self.rpd,
            tpm: self.tpm,
            monthly_budget_micros: self.monthly_budget,
            daily_budget_micros: self.daily_budget,
        }
    }
}

/// A site's request limits and budgets (for the whole site), and its visitors' limits.
#[derive(Debug, Args)]
pub struct SiteLimitArgs {
    #[command(flatten)]
    pub site: CallerLimitArgs,
    /// Requests per minute of one visitor [default: visitors.rpm].
    #[arg(long)]
    pub visitor_rpm: Option<u32>,
    /// Requests per day of one visitor [default: visitors.rpd].
    #[arg(long)]
    pub visitor_rpd: Option<u32>,
    /// Requests per minute of one verified visitor [default: visitors.verified_rpm].
    #[arg(long)]
    pub verified_rpm: Option<u32>,
    /// Requests per day of one verified visitor [default: visitors.verified_rpd].
    #[arg(long)]
    pub verified_rpd: Option<u32>,
}

/// A site limit or budget, as `sites limits --clear` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LimitName {
    Rpm,
    Rpd,
    Tpm,
    MonthlyBudget,
    DailyBudget,
    VisitorRpm,
    VisitorRpd,
    VerifiedRpm,
    VerifiedRpd,
}

impl SiteLimitArgs {
    /// The change these flags ask for: the options given are set, the `cleared` ones removed,
    /// the others kept. Naming one limit in both is refused, since it says two things.
    fn change(&self, cleared: &[LimitName]) -> anyhow::Result<sites::LimitsChange> {
        fn pick<T>(
            value: Option<T>,
            name: LimitName,
            cleared: &[LimitName],
        ) -> anyhow::Result<sites::Change<T>> {
            match (value, cleared.contains(&name)) {
                (Some(_), true) => {
                    let flag = clap::ValueEnum::to_possible_value(&name)
                        .map(|v| v.get_name().to_owned())
                        .unwrap_or_default();
                    bail!("--{flag} and --clear {flag} contradict each other; give one of them")
                }
                (Some(value), false) => Ok(sites::Change::Set(value)),
                (None, true) => Ok(sites::Change::Clear),
                (None, false) => Ok(sites::Change::Keep),
            }
        }
        let site = &self.site;
        Ok(sites::LimitsChange {
            rpm: pick(site.rpm, LimitName::Rpm, cleared)?,
            rpd: pick(site.rpd, LimitName::Rpd, cleared)?,
            tpm: pick(site.tpm, LimitName::Tpm, cleared)?,
            monthly_budget_micros: pick(site.monthly_budget, LimitName::MonthlyBudget, cleared)?,
            daily_budget_micros: pick(site.daily_budget, LimitName::DailyBudget, cleared)?,
            visitor_rpm: pick(self.visitor_rpm, LimitName::VisitorRpm, cleared)?,
            visitor_rpd: pick(self.visitor_rpd, LimitName::VisitorRpd, cleared)?,
            verified_rpm: pick(self.verified_rpm, LimitName::VerifiedRpm, cleared)?,
            verified_rpd: pick(self.verified_rpd, LimitName::VerifiedRpd, cleared)?,
        })
    }

    fn split(&self) -> (CallerLimits, VisitorLimits) {
        (
            self.site.limits(),
            VisitorLimits {
                rpm: self.visitor_rpm,
                rpd: self.visitor_rpd,
                verified_rpm: self.verified_rpm,
                verified_rpd: self.verified_rpd,
            },
        )
    }
}

/// What the widget shows for a site; unset values fall back to the `[widget]` config section.
#[derive(Debug, Args)]
pub struct WidgetArgs {
    /// The chat panel's title.
    #[arg(long)]
    pub title: Option<String>,
    /// The first message a visitor sees.
    #[arg(long)]
    pub greeting: Option<String>,
    /// A suggested first question (repeatable, at most 6).
    #[arg(long = "suggestion", value_name = "TEXT")]
    pub suggestions: Vec<String>,
    /// The widget's main colour, like #1a73e8.
    #[arg(long, value_name = "COLOR")]
    pub primary_color: Option<String>,
}

impl WidgetArgs {
    /// The settings these flags give, over `current`.
    fn apply_to(self, current: SiteWidget) -> SiteWidget {
        SiteWidget {
            title: self.title.or(current.title),
            greeting: self.greeting.or(current.greeting),
            suggestions: if self.suggestions.is_empty() {
                current.suggestions
            } else {
                Some(self.suggestions)
            },
            primary_color: self.primary_color.or(current.primary_color),
        }
    }
}

#[derive(Debug, Args)]
pub struct CreateSiteArgs {
    /// A name for people (shown in listings).
    #[arg(long)]
    pub name: String,
    /// An origin the key may be used from, like https://shop.example (repeatable).
    #[arg(long = "origin", value_name = "ORIGIN")]
    pub origins: Vec<String>,
    /// A model the site may use (repeatable; the first is its default) [default: the first
    /// model the relay serves].
    #[arg(long = "model", value_name = "MODEL")]
    pub models: Vec<String>,
    /// File with the site's system prompt (its assistant's persona and rules).
    #[arg(long, value_name = "FILE")]
    pub system_prompt_file: Option<PathBuf>,
    /// Accept calls without an Origin header (for native apps).
    #[arg(long)]
    pub allow_no_origin: bool,
    /// Cap on max_tokens [default: policy.max_tokens].
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Upper bound for temperature [default: policy.temperature_max].
    #[arg(long)]
    pub temperature_max: Option<f32>,
    /// Latest messages kept in the context [default: policy.context_messages].
    #[arg(long)]
    pub context_messages: Option<u32>,
    /// What happens to a visitor's own system/developer messages: layer them beneath the
    /// site's prompt (within the context limits), drop them, or reject the request
    /// [default: policy.client_instructions].
    #[arg(long, value_parser = client_instructions_parser())]
    pub client_instructions: Option<ClientInstructions>,
    /// How the site answers once it has knowledge (`confab knowledge add`): prefer its
    /// sources, or answer strictly from them [default: prefer].
    #[arg(long, value_parser = grounding_parser())]
    pub grounding: Option<Grounding>,
    #[command(flatten)]
    pub widget: WidgetArgs,
    #[command(flatten)]
    pub limits: SiteLimitArgs,
    /// Print one JSON object (with `id` and `key`).
    #[arg(long)]
    pub json: bool,
}

/// Logs go to stderr, as text or JSON (`log.format`); `RUST_LOG` overrides the level (info for
/// `serve`, warn otherwise). Called once the configuration is loaded, so that its format holds
/// from the first line; an error loading it is printed by `main`, not logged. Does nothing when
/// a subscriber is already installed (a test's).
pub fn init_tracing(command: &Command, format: LogFormat) {
    let default = match command {
        Command::Serve(_) => "info",
        Command::Sites(_)
        | Command::Keys(_)
        | Command::Usage(_)
        | Command::Conversations(_)
        | Command::Knowledge(_) => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            builder.with_ansi(ansi).try_init()
        }
        // The event's fields at the top level; the request's span (request id, method, path,
        // site, key, upstream) under `span`; no list of enclosing spans (there is only one).
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    // Only fails when a subscriber is already installed, which then stays.
    drop(installed);
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let listen = match &cli.command {
        Command::Serve(args) => args.listen,
        Command::Sites(_)
        | Command::Keys(_)
        | Command::Usage(_)
        | Command::Conversations(_)
        | Command::Knowledge(_) => None,
    };
    let sources = ConfigSources { file: cli.config, database_url: cli.database, listen };
    let config = Config::load(&sources)?;
    init_tracing(&cli.command, config.log.format);
    let store = crate::store::open(&config.database).await.with_context(|| {
        format!("cannot open the database {}", crate::store::redacted_url(&config.database.url))
    })?;
    match cli.command {
        Command::Serve(_) => run_serve(config, store).await,
        Command::Sites(command) => run_sites(command, &config, store.as_ref()).await,
        Command::Keys(command) => keys::run(command, &config, store.as_ref()).await,
        Command::Usage(args) => run_usage(args, store.as_ref()).await,
        Command::Conversations(command) => conversations::run(command, store.as_ref()).await,
        Command::Knowledge(command) => knowledge::run(command, &config, store.as_ref()).await,
    }
}

async fn run_serve(config: Config, store: Arc<dyn Store>) -> anyhow::Result<()> {
    let listen = config.server.listen;
    let signals = ShutdownSignals::install()?;
    let mut state = AppState::new(config, Arc::clone(&store)).await?;
    let listener =
        TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener.local_addr()?;
    let public_url = state.config.public_url(bound);

    let admin_listener = match state.config.admin.listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} (admin.listen)"))?,
        ),
        None => None,
    };
    let metrics_listener = match state.config.metrics.listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} (metrics.listen)"))?,
        ),
        None => None,
    };

    if state.admin_token.is_some() && admin_listener.is_none() {
        // Whoever can reach the relay can then try the admin token; said once, at start.
        tracing::warn!(
            "the admin API is served on the public listener ({bound}) because admin.listen is \
             not set; set admin.listen (CONFAB__ADMIN__LISTEN) to an address only operators can \
             reach"
        );
    }
    let mut out = String::new();
    out.push_str(&format!("Confab relay listening on http://{bound}\n"));
    if state.upstreams.demo_only() {
        out.push_str(
            "Upstream: the built-in demo (canned answers). Add [[upstreams]] to confab.toml \
             for a real model.\n",
        );
        if state.config.demo.create_site {
            let demo = sites::ensure_demo_site(store.as_ref(), &state.config, &public_url).await?;
            out.push_str(&demo_instructions(&demo, &public_url));
            out.push_str(&format!("Demo page with the widget: {public_url}/\n"));
            state = state.with_demo_page(DemoPage {
                public_url: public_url.clone(),
                site_key: demo.key.reveal().to_owned(),
            });
        }
    } else {
        out.push_str(&format!("Models: {}\n", state.upstreams.models().join(", ")));
    }
    let admin_base = match (&state.admin_token, &admin_listener) {
        (None, _) => None,
        (Some(_), Some(admin)) => Some(format!("http://{}", admin.local_addr()?)),
        (Some(_), None) => Some(public_url.clone()),
    };
    if let Some(base) = &admin_base {
        out.push_str(&format!("Admin API: {base}/admin/v1/ (token from the configuration)\n"));
        if crate::http::assets::Files::console(&state.config).has("index.html") {
            out.push_str(&format!("Console: {base}/console/ (log in with the admin token)\n"));
        }
    }
    match (&metrics_listener, &admin_listener, &state.admin_token) {
        (Some(metrics), _, _) => {
            out.push_str(&format!("Metrics: http://{}/metrics\n", metrics.local_addr()?));
        }
        (None, Some(admin), _) => {
            out.push_str(&format!("Metrics: http://{}/metrics\n", admin.local_addr()?));
        }
        (None, None, Some(_)) => {
            out.push_str(&format!("Metrics: {public_url}/metrics (with the admin token)\n"));
        }
        (None, None, None) => {}
    }
    let widget = crate::http::assets::Files::widget(&state.config);
    if widget.has("confab.js") {
        out.push_str(&format!(
            "Embed the widget with:\n  <script src=\"{public_url}/confab.js\" data-site=\"SITE_KEY\" async></script>\n"
        ));
    } else {
        out.push_str(&format!(
            "Widget not built (no confab.js in {}): run scripts/build-widget to serve /confab.js.\n",
            widget.describe()
        ));
    }
    print_flush(&out);
    tracing::info!(%bound, "relay started");

    // On Ctrl-C or SIGTERM, stop accepting and let in-flight answers finish, for at most the
    // grace period (`serve` cuts what is still open then, and writes every record before it
    // returns): a stream stuck on a silent upstream must not hold the process forever.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(admin) = admin_listener {
        let mut stopped = stop_rx.clone();
        tokio::spawn(serve_admin(state.clone(), admin, async move {
            let _ = stopped.wait_for(|stopped| *stopped).await;
        }));
    }
    if let Some(metrics) = metrics_listener {
        let mut stopped = stop_rx.clone();
        tokio::spawn(serve_metrics(state.clone(), metrics, async move {
            let _ = stopped.wait_for(|stopped| *stopped).await;
        }));
    }
    serve(state, listener, async move {
        signals.received().await;
        let _ = stop_tx.send(true);
    })
    .await
    .context("the relay stopped, but not everything it recorded could be written")?;
    tracing::info!("relay stopped");
    Ok(())
}

fn demo_instructions(demo: &CreatedSite, public_url: &str) -> String {
    let key = demo.key.reveal();
    format!(
        "Demo site {id} for origin {origins}\n\
         Demo site key (new at every start): {key}\n\
         Try it:\n  curl -N {public_url}/v1/chat/completions \\\n    \
         -H 'Authorization: Bearer {key}' \\\n    -H 'Origin: {origin}' \\\n    \
         -H 'Content-Type: application/json' \\\n    \
         -d '{{\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"Hello!\"}}]}}'\n",
        id = demo.site.id,
        origins = demo.site.settings.origins.join(", "),
        origin = demo.site.settings.origins.first().map_or(public_url, String::as_str),
    )
}

fn print_flush(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Ctrl-C and SIGTERM, listened for from the moment this is created (so a signal sent as soon as
/// the relay reports ready is never missed).
struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?,
                terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves on the first Ctrl-C or SIGTERM.
    async fn received(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {},
            _ = self.terminate.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested; finishing in-flight requests");
    }
}

async fn run_sites(
    command: SitesCommand,
    config: &Config,
    store: &dyn Store,
) -> anyhow::Result<()> {
    match command {
        SitesCommand::Create(args) => {
            let json_output = args.json;
            let system_prompt = match &args.system_prompt_file {
                Some(path) => Some(
                    tokio::fs::read_to_string(path)
                        .await
                        .with_context(|| format!("cannot read {}", path.display()))?,
                ),
                None => None,
            };
            let (limits, visitor_limits) = args.limits.split();
            let spec = SiteSpec {
                name: args.name,
                origins: args.origins,
                allow_no_origin: args.allow_no_origin,
                models: args.models,
                system_prompt,
                max_tokens: args.max_tokens,
                temperature_max: args.temperature_max,
                context_messages: args.context_messages,
                client_instructions: args.client_instructions,
                widget: args.widget.apply_to(SiteWidget::default()),
                limits,
                visitor_limits,
                conversations: Default::default(),
                grounding: args.grounding.unwrap_or_default(),
            };
            let created = sites::create_site(store, config, spec, false).await?;
            if json_output {
                let mut value = sites::site_view(&created.site);
                value["key"] = json!(created.key.reveal());
                print_flush(&format!("{value}\n"));
            } else {
                print_flush(&format!(
                    "{}\nSite key (shown once; it is public and only works from the origins \
                     above):\n  {}\n",
                    describe(&created.site),
                    created.key.reveal()
                ));
            }
        }
        SitesCommand::List { json } => {
            let sites = store.list_sites().await?;
            if json {
                let list: Vec<_> = sites.iter().map(sites::site_view).collect();
                print_flush(&format!("{}\n", serde_json::Value::Array(list)));
            } else if sites.is_empty() {
                print_flush("No sites yet. Create one with `confab sites create`.\n");
            } else {
                let mut out = format!(
                    "{:<16} {:<20} {:<34} {:<16} {}\n",
                    "ID", "NAME", "KEY", "MODEL", "ORIGINS"
                );
                for site in &sites {
                    out.push_str(&format!(
                        "{:<16} {:<20} {:<34} {:<16} {}\n",
                        site.id,
                        site.settings.name,
                        public_prefix(&site.key_lookup_id),
                        site.settings.default_model(),
                        origins_text(&site.settings)
                    ));
                }
                print_flush(&out);
            }
        }
        SitesCommand::Show { id, json } => {
            let Some(site) = store.site(&id).await? else {
                bail!("no site with id `{id}` (see `confab sites list`)");
            };
            if json {
                print_flush(&format!("{}\n", sites::site_view(&site)));
            } else {
                print_flush(&format!("{}\n", describe(&site)));
            }
        }
        SitesCommand::Update {
            id,
            widget,
            client_instructions,
            grounding,
            no_suggestions,
            conversations,
        } => {
            let Some(site) = store.site(&id).await? else {
                bail!("no site with id `{id}` (see `confab sites list`)");
            };
            let mut updated = widget.apply_to(site.settings.widget.clone());
            if no_suggestions {
                updated.suggestions = None;
            }
            sites::update_widget(store, &id, updated).await?;
            if let Some(setting) = client_instructions {
                store.set_site_client_instructions(&id, Some(setting)).await?;
            }
            if let Some(grounding) = grounding {
                store.set_site_grounding(&id, grounding).await?;
            }
            if let Some(change) = conversations.change() {
                sites::change_conversations(store, &id, change).await?;
            }
            let site = store.site(&id).await?.unwrap_or(site);
            print_flush(&format!("{}\n", describe(&site)));
        }
        SitesCommand::Limits { id, limits, clear } => {
            let change = limits.change(&clear)?;
            let Some(site) = sites::update_limits(store, &id, &change).await? else {
                bail!("no site with id `{id}` (see `confab sites list`)");
            };
            print_flush(&format!("{}\n", describe(&site)));
        }
        SitesCommand::Origins { id, add, remove } => {
            let Some(site) = sites::change_origins(store, &id, &add, &remove).await? else {
                bail!("no site with id `{id}` (see `confab sites list`)");
            };
            print_flush(&format!("{}\n", describe(&site)));
        }
        SitesCommand::Verification { id, new_secret, require, allow_unverified, off, mode } => {
            let change = sites::VerificationChange {
                new_secret,
                off,
                mode,
                required: if require {
                    Some(true)
                } else if allow_unverified {
                    Some(false)
                } else {
                    None
                },
            };
            let Some((site, secret)) = sites::change_verification(store, &id, change).await? else {
                bail!("no site with id `{id}` (see `confab sites list`)");
            };
            let tokens = if site.verification.secret.is_some() {
                match site.verification.mode {
                    TokenMode::Hmac => "accepted in the hmac form only",
                    TokenMode::Jwt => "accepted as HS256 JWTs only",
                }
            } else {
                "not accepted"
            };
            let mut out = format!(
                "Site {id}: visitor tokens {tokens}; unverified visitors {}.\n",
                if site.verification.required { "refused" } else { "allowed" },
            );
            if let Some(secret) = secret {
                out.push_str(&format!(
                    "Visitor secret (shown once; keep it on the site's server, sign visitor tokens \
                     with it):\n  {}\n",
                    secret.reveal()
                ));
            }
            print_flush(&out);
        }
        SitesCommand::Rekey { id, grace, json } => {
            let grace =
                std::time::Duration::from_secs(grace.unwrap_or(config.keys.rotation_grace_secs));
            let Some(rekeyed) = sites::rekey_site(store, &id, grace).await? else {
                bail!("no site with id `{id}` (see `confab sites list`)");
            };
            if json {
                let mut value = sites::site_view(&rekeyed.site);
                value["key"] = json!(rekeyed.key.reveal());
                print_flush(&format!("{value}\n"));
            } else {
                let previous = match rekeyed.site.previous_key_expires_at {
                    Some(until) => {
                        format!("the previous key keeps working until {}", crate::rfc3339(until))
                    }
                    None => "the previous key no longer works".to_owned(),
                };
                print_flush(&format!(
                    "{}\nNew site key (shown once; {previous}):\n  {}\n",
                    describe(&rekeyed.site),
                    rekeyed.key.reveal()
                ));
            }
        }
        SitesCommand::Delete { id } => {
            if !store.delete_site(&id).await? {
                bail!("no site with id `{id}` (see `confab sites list`)");
            }
            print_flush(&format!("Deleted site {id}; its key no longer works.\n"));
        }
    }
    Ok(())
}

async fn run_usage(args: UsageArgs, store: &dyn Store) -> anyhow::Result<()> {
    let report = crate::usage::report(
        store,
        args.days,
        args.site.as_deref(),
        args.key.as_deref(),
        crate::unix_now(),
    )
    .await?;
    if args.json {
        print_flush(&format!("{}\n", serde_json::to_string(&report)?));
        return Ok(());
    }
    let line = |name: &str, t: &crate::usage::Totals| {
        format!(
            "{name:<24} {:>9} {:>12} {:>12} {:>12}\n",
            t.requests,
            t.input_tokens,
            t.output_tokens,
            keys::format_usd(t.cost_micros)
        )
    };
    let header = format!(
        "{:<24} {:>9} {:>12} {:>12} {:>12}\n",
        "", "REQUESTS", "INPUT TOK", "OUTPUT TOK", "COST"
    );
    let mut out = format!("Usage since {} (UTC)\n\n{header}", report.since);
    for day in &report.days {
        out.push_str(&line(&day.date, &day.totals));
    }
    out.push_str(&line("total", &report.totals));
    for (title, groups) in
        [("site", &report.by_site), ("key", &report.by_key), ("model", &report.by_model)]
    {
        if !groups.is_empty() {
            out.push_str(&format!("\nBy {title}\n{header}"));
            for (name, totals) in groups {
                out.push_str(&line(name, totals));
            }
        }
    }
    print_flush(&out);
    Ok(())
}

fn origins_text(settings: &SiteSettings) -> String {
    let mut text = settings.origins.join(", ");
    if settings.allow_no_origin {
        if !text.is_empty() {
            text.push_str(", ");
        }
        text.push_str("(no origin)");
    }
    text
}

fn describe(site: &Site) -> String {
    let settings = &site.settings;
    let optional = |v: Option<String>| v.unwrap_or_else(|| "default".into());
    format!(
        "Site {id} \"{name}\"\n  key:          {key}\n  origins:      {origins}\n  \
         models:       {models}\n  system prompt: {prompt}\n  max_tokens:   {max_tokens}\n  \
         temperature:  <= {temperature}\n  context:      {context} messages\n  \
         client instructions: {instructions}\n  grounding:    {grounding}\n  widget:       {widget}\n  limits:       {limits}\n  per visitor:  {visitor}\n  \
         conversations: {conversations}\n  created:      {created}",
        id = site.id,
        name = settings.name,
        key = public_prefix(&site.key_lookup_id),
        origins = origins_text(settings),
        models = settings.models.join(", "),
        prompt = settings
            .system_prompt
            .as_ref()
            .map_or_else(|| "none".to_owned(), |p| format!("{} characters", p.chars().count())),
        max_tokens = optional(settings.max_tokens.map(|v| v.to_string())),
        temperature = optional(settings.temperature_max.map(|v| v.to_string())),
        context = optional(settings.context_messages.map(|v| v.to_string())),
        instructions = optional(settings.client_instructions.map(|c| c.as_str().to_owned())),
        grounding = settings.grounding.as_str(),
        widget = widget_text(&settings.widget),
        limits = keys::limits_text(&settings.limits),
        visitor = visitor_limits_text(&settings.visitor_limits),
        conversations = conversations::settings_text(&settings.conversations),
        created = crate::rfc3339(site.created_at),
    )
}

fn visitor_limits_text(limits: &VisitorLimits) -> String {
    let text = |v: Option<u32>| v.map_or_else(|| "default".to_owned(), |v| v.to_string());
    format!(
        "{} rpm, {} rpd (verified: {} rpm, {} rpd)",
        text(limits.rpm),
        text(limits.rpd),
        text(limits.verified_rpm),
        text(limits.verified_rpd)
    )
}

fn widget_text(widget: &SiteWidget) -> String {
    let mut parts = Vec::new();
    if let Some(title) = &widget.title {
        parts.push(format!("title \"{title}\""));
    }
    if let Some(greeting) = &widget.greeting {
        parts.push(format!("greeting of {} characters", greeting.chars().count()));
    }
    if let Some(suggestions) = &widget.suggestions {
        parts.push(format!("{} suggested questions", suggestions.len()));
    }
    if let Some(color) = &widget.primary_color {
        parts.push(format!("colour {color}"));
    }
    if parts.is_empty() { "defaults".to_owned() } else { parts.join(", ") }
}
