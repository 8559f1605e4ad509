//! `confab conversations ...`, and the conversation options of `confab sites update`.

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use super::print_flush;
use crate::sites::{Change, ConversationsChange};
use crate::store::{ConversationFilter, ConversationSettings, Holder, Store};

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

impl Switch {
    fn on(self) -> bool {
        self == Switch::On
    }
}

/// The conversation settings of `confab sites update` (options not given stay as they are).
#[derive(Debug, Args)]
pub struct SettingsArgs {
    /// Keep each conversation (visitor hash, page, messages, model, tokens, cost, outcome) on
    /// the server.
    #[arg(long, value_name = "on|off")]
    pub transcripts: Option<Switch>,
    /// Delete conversations not updated for this many days (1 to 3650) [default: 30].
    #[arg(long, value_name = "DAYS")]
    pub retention_days: Option<u32>,
    /// Replace e-mail addresses and phone numbers with [email] and [phone] before storage.
    #[arg(long, value_name = "on|off")]
    pub mask_contacts: Option<Switch>,
    /// The line the widget shows visitors when transcripts are on.
    #[arg(long, value_name = "TEXT", conflicts_with = "default_notice")]
    pub notice: Option<String>,
    /// Show the relay's default notice again.
    #[arg(long)]
    pub default_notice: bool,
    /// Offer "talk to a person" in the widget (needs transcripts on).
    #[arg(long, value_name = "on|off")]
    pub handoff: Option<Switch>,
}

impl SettingsArgs {
    /// The change these options ask for; `None` when they ask for none.
    pub fn change(self) -> Option<ConversationsChange> {
        let change = ConversationsChange {
            transcripts: self.transcripts.map(Switch::on),
            retention_days: self.retention_days,
            mask_contacts: self.mask_contacts.map(Switch::on),
            notice: match (self.notice, self.default_notice) {
                (Some(text), _) => Change::Set(text),
                (None, true) => Change::Clear,
                (None, false) => Change::Keep,
            },
            handoff: self.handoff.map(Switch::on),
        };
        (change != ConversationsChange::default()).then_some(change)
    }
}

/// One line for `sites show`.
pub fn settings_text(settings: &ConversationSettings) -> String {
    if !settings.transcripts {
        return "not kept".into();
    }
    let mut text = format!("kept {} days", settings.retention_days);
    if settings.mask_contacts {
        text.push_str(", contacts masked");
    }
    if settings.handoff {
        text.push_str(", hand-off to a person");
    }
    if let Some(notice) = &settings.notice {
        text.push_str(&format!(", notice \"{notice}\""));
    }
    text
}

#[derive(Debug, Subcommand)]
pub enum ConversationsCommand {
    /// List conversations, newest activity first.
    List {
        #[arg(long, value_name = "ID")]
        site: Option<String>,
        /// Only this visitor's (the hash in usage records and conversations).
        #[arg(long, value_name = "HASH")]
        visitor: Option<String>,
        /// Only those a person was asked for (`waiting`) or holds (`person`), or the bot's.
        #[arg(long, value_name = "bot|waiting|person")]
        holder: Option<String>,
        /// Only those with a message containing this text.
        #[arg(long, value_name = "TEXT")]
        search: Option<String>,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a conversation with its messages and feedback.
    Show {
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete one conversation, or (with --visitor) every conversation of a visitor.
    Delete {
        #[arg(required_unless_present = "visitor", conflicts_with = "visitor")]
        id: Option<String>,
        /// Erase this visitor: every conversation with this visitor hash.
        #[arg(long, value_name = "HASH")]
        visitor: Option<String>,
        /// With --visitor: only on this site.
        #[arg(long, value_name = "ID", requires = "visitor")]
        site: Option<String>,
    },
}

pub async fn run(command: ConversationsCommand, store: &dyn Store) -> anyhow::Result<()> {
    match command {
        ConversationsCommand::List { site, visitor, holder, search, limit, json } => {
            let holder = match holder.as_deref() {
                None => None,
                Some(name) => match Holder::from_name(name) {
                    Some(holder) => Some(holder),
                    None => bail!("--holder is bot, waiting or person"),
                },
            };
            let filter = ConversationFilter {
                site_id: site,
                visitor,
                holder,
                text: search,
                limit,
                ..ConversationFilter::default()
            };
            let list = store.list_conversations(&filter).await?;
            if json {
                let data: Vec<_> = list
                    .iter()
                    .map(|c| {
                        json!({
                            "id": c.id, "site_id": c.site_id, "visitor": c.visitor,
                            "updated_at": crate::rfc3339(c.updated_at_ms / 1000),
                            "messages": c.messages, "cost_micros": c.cost_micros,
                            "holder": c.holder.as_str(),
                            "feedback": {"up": c.feedback_up, "down": c.feedback_down},
                        })
                    })
                    .collect();
                print_flush(&format!("{}\n", json!({ "data": data })));
            } else if list.is_empty() {
                print_flush("No conversations.\n");
            } else {
                let mut out = String::new();
                for c in &list {
                    out.push_str(&format!(
                        "{}  {}  {}  {} messages  ${:.6}  {}  +{} -{}\n",
                        c.id,
                        c.site_id,
                        crate::rfc3339(c.updated_at_ms / 1000),
                        c.messages,
                        c.cost_micros as f64 / 1e6,
                        c.holder.as_str(),
                        c.feedback_up,
                        c.feedback_down,
                    ));
                }
                print_flush(&out);
            }
        }
        ConversationsCommand::Show { id, json } => {
            let Some(c) = store.conversation(&id).await? else {
                bail!("no conversation with id `{id}` (see `confab conversations list`)");
            };
            let messages = store.messages(&id, 0, u32::MAX).await?;
            if json {
                let messages: Vec<_> = messages
                    .iter()
                    .map(|m| {
                        json!({
                            "seq": m.seq, "author": m.author.as_str(), "content": m.content,
                            "at": m.at_ms, "request_id": m.request_id,
                            "rating": m.rating.map(|r| r.as_str()), "comment": m.comment,
                        })
                    })
                    .collect();
                let view = json!({
                    "id": c.id, "site_id": c.site_id, "visitor": c.visitor,
                    "page_url": c.page_url, "holder": c.holder.as_str(),
                    "cost_micros": c.cost_micros, "messages": messages,
                });
                print_flush(&format!("{view}\n"));
            } else {
                let mut out = format!(
                    "Conversation {} on {} (visitor {}, page {})\n  {} messages, {} in / {} out \
                     tokens, ${:.6}, held by {}\n",
                    c.id,
                    c.site_id,
                    c.visitor.as_deref().unwrap_or("unknown"),
                    c.page_url.as_deref().unwrap_or("unknown"),
                    c.messages,
                    c.input_tokens,
                    c.output_tokens,
                    c.cost_micros as f64 / 1e6,
                    c.holder.as_str(),
                );
                for m in &messages {
                    let rating = m.rating.map(|r| format!(" [{}]", r.as_str())).unwrap_or_default();
                    let comment =
                        m.comment.as_ref().map(|c| format!(" \"{c}\"")).unwrap_or_default();
                    out.push_str(&format!(
                        "\n{} {}{rating}{comment}:\n{}\n",
                        crate::rfc3339(m.at_ms / 1000),
                        m.author.as_str(),
                        m.content
                    ));
                }
                print_flush(&out);
            }
        }
        ConversationsCommand::Delete { id, visitor, site } => {
            if let Some(visitor) = visitor {
                let deleted = store.delete_visitor(&visitor, site.as_deref()).await?;
                print_flush(&format!("Deleted {deleted} conversation(s) of visitor {visitor}.\n"));
            } else if let Some(id) = id {
                if !store.delete_conversation(&id).await? {
                    bail!("no conversation with id `{id}`");
                }
                print_flush(&format!("Deleted conversation {id}.\n"));
            }
        }
    }
    Ok(())
}
