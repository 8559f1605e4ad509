//! How a `postgres://` URL becomes connection options: sqlx's parser, then libpq's meaning where
//! sqlx's differs, so that a URL copied from a provider's console or from `psql` means what it
//! says there.
//!
//! TLS follows `sslmode` (`disable`, `prefer` (the default), `require`, `verify-ca`,
//! `verify-full`; `allow` is `disable`) and `sslrootcert`, also taken from `PGSSLMODE` and
//! `PGSSLROOTCERT` as libpq does. What differs from libpq, and why:
//!
//! - `require` with a root certificate verifies the chain, as `verify-ca` would: libpq does so,
//!   sqlx would accept any certificate.
//! - `sslrootcert=system` trusts the public authorities built into the relay (webpki-roots) and
//!   makes `verify-full` the default; a weaker mode beside it is refused, as libpq (16+) does.
//!   sqlx would read a file named `system`.
//! - `verify-ca` and `verify-full` without `sslrootcert` trust those public authorities, where
//!   libpq reads `~/.postgresql/root.crt`; and the CA of `sslrootcert` is trusted beside them, not
//!   instead of them (sqlx always adds its built-in roots). With `verify-full` that takes a
//!   public certificate for the database's own host name; `verify-ca`, which checks no name, is
//!   the weaker for it.

use std::str::FromStr;

use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use confab_store::StoreError;

/// The value of `sslrootcert` that names the system's authorities rather than a file.
const SYSTEM_ROOTS: &str = "system";

/// The options `url` names, with libpq's meaning (see the module's header). An error never
/// contains the URL, which may hold a password.
pub fn from_url(url: &str) -> Result<PgConnectOptions, StoreError> {
    let options = PgConnectOptions::from_str(url)?;
    let mode = options.get_ssl_mode();
    match root_certificate(&options) {
        None => Ok(options),
        Some(RootCertificate::System) => match mode {
            // `prefer` is also what sqlx says when no mode was given: libpq's default with
            // `sslrootcert=system` is `verify-full`.
            PgSslMode::Prefer | PgSslMode::VerifyFull => Ok(options
                // No certificate of its own: the built-in public authorities only.
                .ssl_root_cert_from_pem(Vec::new())
                .ssl_mode(PgSslMode::VerifyFull)),
            weak => Err(StoreError::Database(
                format!(
                    "database.url: sslmode={} may not be used with sslrootcert=system: use \
                     sslmode=verify-full (or leave sslmode out)",
                    mode_name(weak)
                )
                .into(),
            )),
        },
        Some(RootCertificate::Given) => match mode {
            PgSslMode::Require => Ok(options.ssl_mode(PgSslMode::VerifyCa)),
            _ => Ok(options),
        },
    }
}

/// What `sslrootcert` (or `PGSSLROOTCERT`) says.
#[derive(Debug, PartialEq, Eq)]
enum RootCertificate {
    /// `system`: the system's (here, the built-in) public authorities.
    System,
    /// A file, or PEM text.
    Given,
}

/// sqlx keeps the root certificate to itself; its URL form is the one place that shows it
/// (a file as `file: PATH`, PEM text as itself).
fn root_certificate(options: &PgConnectOptions) -> Option<RootCertificate> {
    let url = options.to_url_lossy();
    let (_, value) = url.query_pairs().find(|(name, _)| name == "sslrootcert")?;
    if value.strip_prefix("file: ").unwrap_or(&value) == SYSTEM_ROOTS {
        Some(RootCertificate::System)
    } else {
        Some(RootCertificate::Given)
    }
}

fn mode_name(mode: PgSslMode) -> &'static str {
    match mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str) -> &'static str {
        mode_name(from_url(url).unwrap().get_ssl_mode())
    }

    #[test]
    fn sslmode_is_taken_as_written() {
        for name in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            assert_eq!(mode(&format!("postgres://db.example/c?sslmode={name}")), name);
        }
    }

    #[test]
    fn require_with_a_root_certificate_verifies_the_chain_as_libpq_does() {
        assert_eq!(
            mode("postgres://db.example/c?sslmode=require&sslrootcert=/ca.pem"),
            "verify-ca"
        );
        assert_eq!(
            mode("postgres://db.example/c?sslmode=verify-full&sslrootcert=/ca.pem"),
            "verify-full"
        );
        assert_eq!(mode("postgres://db.example/c?sslmode=disable&sslrootcert=/ca.pem"), "disable");
    }

    #[test]
    fn sslrootcert_system_means_the_public_authorities_and_verify_full() {
        let options = from_url("postgres://db.example/c?sslrootcert=system").unwrap();
        assert_eq!(mode_name(options.get_ssl_mode()), "verify-full");
        // No file named `system` is read: the root certificate is empty PEM, which adds none.
        assert_eq!(root_certificate(&options), Some(RootCertificate::Given));
        assert_eq!(
            mode("postgres://db.example/c?sslmode=verify-full&sslrootcert=system"),
            "verify-full"
        );
    }

    #[test]
    fn sslrootcert_system_refuses_a_weaker_mode_without_showing_the_url() {
        let error = from_url("postgres://u:s3cret@db.example/c?sslmode=require&sslrootcert=system")
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "storage failure: database.url: sslmode=require may not be used with \
             sslrootcert=system: use sslmode=verify-full (or leave sslmode out)"
        );
    }
}
