//! The relay's keys: publishable site keys, `confab_pk_<lookup id>_<secret>`, and secret API
//! keys for server-side callers, `confab_sk_<lookup id>_<secret>`.
//!
//! The lookup id (12 base62 characters) is stored in clear and is what logs and listings show,
//! as `confab_pk_<lookup id>`; the secret part (32 base62 characters, about 190 bits) is stored
//! only as its SHA-256 (a fast hash is enough for a random secret of that strength; a slow one is
//! for passwords people choose) and compared in constant time. A site key lives in public page
//! source, so its strength is not what protects a site: the origin check and the site's policy
//! are. Hashing still keeps a leaked database from handing out working keys.

use std::fmt;

use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const LOOKUP_LEN: usize = 12;
const SECRET_LEN: usize = 32;

/// Which kind of key a token is, by its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Publishable, scoped to a site's origins (`confab_pk_`).
    Site,
    /// Secret, for server-side callers (`confab_sk_`).
    Secret,
}

impl KeyKind {
    pub const fn prefix(self) -> &'static str {
        match self {
            KeyKind::Site => "confab_pk_",
            KeyKind::Secret => "confab_sk_",
        }
    }

    /// What logs and listings show of a key: its prefix and lookup id, never the secret part.
    pub fn public(self, lookup_id: &str) -> String {
        format!("{}{lookup_id}", self.prefix())
    }
}

/// A freshly generated key. Its full value exists only until it is shown once.
pub struct NewKey {
    pub kind: KeyKind,
    pub lookup_id: String,
    pub hash: [u8; 32],
    full: String,
}

impl NewKey {
    pub fn generate(kind: KeyKind) -> Self {
        let mut rng = rand::rng();
        let mut part = |len: usize| -> String {
            (&mut rng).sample_iter(Alphanumeric).take(len).map(char::from).collect()
        };
        let lookup_id = part(LOOKUP_LEN);
        let secret = part(SECRET_LEN);
        let hash = hash_secret(&secret);
        let full = format!("{}{lookup_id}_{secret}", kind.prefix());
        Self { kind, lookup_id, hash, full }
    }

    /// The whole key, to show to the operator once.
    pub fn reveal(&self) -> &str {
        &self.full
    }
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NewKey({})", self.kind.public(&self.lookup_id))
    }
}

/// A key as presented by a client, split into its parts.
pub struct PresentedKey<'a> {
    pub kind: KeyKind,
    pub lookup_id: &'a str,
    secret: &'a str,
}

impl<'a> PresentedKey<'a> {
    /// Splits a bearer token; `None` when it is not shaped like one of the relay's keys.
    pub fn parse(token: &'a str) -> Option<Self> {
        let (kind, rest) = [KeyKind::Site, KeyKind::Secret]
            .into_iter()
            .find_map(|kind| Some((kind, token.strip_prefix(kind.prefix())?)))?;
        let (lookup_id, secret) = rest.split_once('_')?;
        let well_formed = |part: &str, len: usize| {
            part.len() == len && part.bytes().all(|b| b.is_ascii_alphanumeric())
        };
        (well_formed(lookup_id, LOOKUP_LEN) && well_formed(secret, SECRET_LEN)).then_some(Self {
            kind,
            lookup_id,
            secret,
        })
    }

    /// Compares the secret with a stored hash in constant time.
    pub fn matches(&self, stored_hash: &[u8]) -> bool {
        hash_secret(self.secret).ct_eq(stored_hash).into()
    }
}

impl fmt::Debug for PresentedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PresentedKey({})", self.kind.public(self.lookup_id))
    }
}

/// What logs and listings show of a site key.
pub fn public_prefix(lookup_id: &str) -> String {
    KeyKind::Site.public(lookup_id)
}

fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_parses_and_matches_its_hash() {
        for kind in [KeyKind::Site, KeyKind::Secret] {
            let key = NewKey::generate(kind);
            assert!(key.reveal().starts_with(kind.prefix()));
            let presented = PresentedKey::parse(key.reveal()).unwrap();
            assert_eq!(presented.kind, kind);
            assert_eq!(presented.lookup_id, key.lookup_id);
            assert!(presented.matches(&key.hash));
        }
    }

    #[test]
    fn a_key_with_a_changed_secret_does_not_match() {
        let key = NewKey::generate(KeyKind::Secret);
        let mut forged = key.reveal().to_owned();
        let last = forged.pop().unwrap();
        forged.push(if last == 'a' { 'b' } else { 'a' });
        assert!(!PresentedKey::parse(&forged).unwrap().matches(&key.hash));
    }

    #[test]
    fn malformed_tokens_are_not_site_keys() {
        for token in [
            "",
            "confab_pk_",
            "sk-abc",
            "confab_pk_short_secret",
            "confab_pk_AAAAAAAAAAAA_",
            "confab_xk_AAAAAAAAAAAA_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(PresentedKey::parse(token).is_none(), "{token}");
        }
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let key = NewKey::generate(KeyKind::Secret);
        let secret = key.reveal().rsplit('_').next().unwrap().to_owned();
        assert!(!format!("{key:?}").contains(&secret));
    }
}
