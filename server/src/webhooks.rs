//! Webhooks (being written).

use serde::{Deserialize, Serialize};

/// `[webhooks]` (being written).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {}
