//! The console's pages and their addresses (`#/...` fragments).

/// A page of the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Overview,
    Conversations,
    Conversation(String),
    /// A conversation opened by a hand-off link: its id and the link's `expires=…&sig=…`.
    Shared {
        id: String,
        query: String,
    },
    Sites,
    Keys,
    Webhooks,
    Usage,
}

impl Route {
    /// The page a fragment names (`#/sites`); anything unknown is the overview.
    pub fn parse(hash: &str) -> Self {
        let path = hash.trim_start_matches('#').trim_start_matches('/');
        let mut parts = path.splitn(2, '/');
        match (parts.next().unwrap_or_default(), parts.next()) {
            ("conversations", Some(id)) if !id.is_empty() => Self::Conversation(id.to_owned()),
            ("conversations", _) => Self::Conversations,
            ("shared", Some(rest)) => {
                let (id, query) = rest.split_once('?').unwrap_or((rest, ""));
                Self::Shared { id: id.to_owned(), query: query.to_owned() }
            }
            ("sites", _) => Self::Sites,
            ("keys", _) => Self::Keys,
            ("webhooks", _) => Self::Webhooks,
            ("usage", _) => Self::Usage,
            _ => Self::Overview,
        }
    }

    /// The fragment of this page, for links.
    pub fn href(&self) -> String {
        match self {
            Self::Overview => "#/".into(),
            Self::Conversations => "#/conversations".into(),
            Self::Conversation(id) => format!("#/conversations/{id}"),
            Self::Shared { id, query } => format!("#/shared/{id}?{query}"),
            Self::Sites => "#/sites".into(),
            Self::Keys => "#/keys".into(),
            Self::Webhooks => "#/webhooks".into(),
            Self::Usage => "#/usage".into(),
        }
    }

    /// The page's heading (and, with the console's name, the document's title).
    pub fn title(&self) -> &'static str {
        match self {
            Self::Overview => "Overview",
            Self::Conversations => "Conversations",
            Self::Conversation(_) | Self::Shared { .. } => "Conversation",
            Self::Sites => "Sites",
            Self::Keys => "Secret keys",
            Self::Webhooks => "Webhooks",
            Self::Usage => "Usage",
        }
    }

    /// The navigation entry this page belongs under.
    pub fn section(&self) -> Self {
        match self {
            Self::Conversation(_) | Self::Shared { .. } => Self::Conversations,
            other => other.clone(),
        }
    }
}

/// The navigation's entries, in order.
pub const NAVIGATION: [Route; 6] = [
    Route::Overview,
    Route::Conversations,
    Route::Sites,
    Route::Keys,
    Route::Webhooks,
    Route::Usage,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_name_pages_and_links_round_trip() {
        assert_eq!(Route::parse(""), Route::Overview);
        assert_eq!(Route::parse("#/nowhere"), Route::Overview);
        assert_eq!(Route::parse("#/conversations/"), Route::Conversations);
        let conversation = Route::parse("#/conversations/conv_1");
        assert_eq!(conversation, Route::Conversation("conv_1".into()));
        assert_eq!(conversation.section(), Route::Conversations);
        let shared = Route::parse("#/shared/c_1?expires=9&sig=ab");
        assert_eq!(shared, Route::Shared { id: "c_1".into(), query: "expires=9&sig=ab".into() });
        for route in NAVIGATION.iter().chain([&conversation, &shared]) {
            assert_eq!(&Route::parse(&route.href()), route);
        }
    }
}
