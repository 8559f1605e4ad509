//! What the widget learns about its site from the relay.

use serde::{Deserialize, Serialize};

/// `GET /v1/widget/config` response: the site's defaults for the widget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct WidgetConfig {
    pub title: String,
    pub greeting: String,
    #[serde(default)]
    pub suggestions: Vec<String>,
    #[serde(default)]
    pub theme: WidgetTheme,
    /// The longest message the relay accepts from a visitor, in UTF-8 bytes.
    pub max_message_bytes: u32,
    /// Present when the site keeps transcripts: the line the widget shows visitors, and
    /// whether a person can be asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversations: Option<ConversationsConfig>,
}

/// What the widget needs to know of a site that keeps transcripts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ConversationsConfig {
    /// Shown in the panel: visitors are told their conversation is kept.
    pub notice: String,
    /// Offer "talk to a person".
    #[serde(default)]
    pub handoff: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct WidgetTheme {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_color: Option<String>,
}
