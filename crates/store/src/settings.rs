//! Site settings whose values the store keeps by name.

use std::fmt;

/// What happens to a client's own `system` and `developer` messages. They always count against
/// `context_messages` and `context_bytes`, like conversation turns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientInstructions {
    /// Kept, beneath the site's own prompt, with a heading that says they cannot override it.
    #[default]
    Layer,
    /// Removed before the request goes upstream.
    Drop,
    /// The request is refused (400 `client_instructions_not_allowed`).
    Reject,
}

impl ClientInstructions {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Layer => "layer",
            Self::Drop => "drop",
            Self::Reject => "reject",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Layer, Self::Drop, Self::Reject].into_iter().find(|c| c.as_str() == name)
    }
}

impl std::str::FromStr for ClientInstructions {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::from_name(text).ok_or_else(|| format!("`{text}` is not one of layer, drop, reject"))
    }
}

/// How a site with knowledge answers: from its sources where they help, or only from them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grounding {
    /// The model is given the sources that match the question and asked to use and cite them;
    /// it may still answer what they do not cover.
    #[default]
    Prefer,
    /// The model is told to answer only from the sources and to say when they do not cover the
    /// question (offering a person, where the site has hand-off).
    Strict,
}

impl Grounding {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prefer => "prefer",
            Self::Strict => "strict",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Prefer, Self::Strict].into_iter().find(|g| g.as_str() == name)
    }
}

/// A `sites.grounding` column as stored (`NULL` from before the column had a default: `prefer`).
pub fn grounding_column(value: Option<String>) -> Result<Grounding, crate::StoreError> {
    match value {
        None => Ok(Grounding::default()),
        Some(name) => Grounding::from_name(&name)
            .ok_or_else(|| crate::StoreError::Corrupt(format!("sites.grounding `{name}`"))),
    }
}

impl std::str::FromStr for Grounding {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::from_name(text).ok_or_else(|| format!("`{text}` is not one of prefer, strict"))
    }
}

/// Which form of visitor token a site's backend issues, and so the only one the relay accepts
/// for that site (see the relay's `visitor::tokens` for why not both).
///
/// Sites that had a visitor secret before there were modes are `hmac` (migration 0009): that is
/// the form the widget's `Confab.identify({ userId, userHash })` sends, and the only form whose
/// issuing can be turned into a forgery of the other, so refusing JWTs there closes the hole
/// whatever the site used; a site that used JWTs sees `wrong_visitor_token_form` and switches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum TokenMode {
    /// `hmac.<base64url user id>.<hex HMAC-SHA256(secret, user id)>`; the default.
    #[default]
    Hmac,
    /// Short-lived HS256 JWTs.
    Jwt,
}

impl TokenMode {
    /// The name in the CLI, the admin API and the database: `hmac` or `jwt`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hmac => "hmac",
            Self::Jwt => "jwt",
        }
    }
}

impl fmt::Display for TokenMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token mode that is neither `hmac` nor `jwt`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a visitor token mode: use hmac or jwt")]
pub struct UnknownTokenMode(pub String);

impl std::str::FromStr for TokenMode {
    type Err = UnknownTokenMode;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "hmac" => Ok(Self::Hmac),
            "jwt" => Ok(Self::Jwt),
            other => Err(UnknownTokenMode(other.to_owned())),
        }
    }
}
