//! Conversations kept on the server, for sites that turn transcripts on (issue 14).

/// What the widget tells visitors of a site that keeps transcripts, unless the site says
/// otherwise.
pub const NOTICE: &str = "This conversation is recorded to help us improve our answers.";
