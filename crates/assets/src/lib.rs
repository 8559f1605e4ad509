//! The built widget and console, embedded in the relay's binary, so that copying one file is
//! installing the whole product (issue 16).
//!
//! With the `embed` feature, `build.rs` includes every file of `dist/widget` and `dist/console`
//! (as `scripts/build-widget` and `scripts/build-console` make them: content-hashed names,
//! `.br` and `.gz` variants next to each file) and [`Bundle::widget`] and [`Bundle::console`]
//! return them; without it they return `None` and the relay serves the files from disk
//! (`widget.assets_dir`, `admin.console_dir`, which also override an embedded bundle).
//!
//! [`Bundle::serve`] answers a path the way the relay's file server does for files on disk:
//! the content type by extension, and the brotli or gzip variant when the client accepts it.
//!
//! **Architecture Invariant:** no I/O and no HTTP types: a bundle is bytes by path; the relay's
//! `http::assets` and `http::console` turn an answer into a response.

include!(concat!(env!("OUT_DIR"), "/bundles.rs"));

/// Files by path (relative to the bundle's root, `/`-separated), sorted by path.
#[derive(Clone, Copy)]
pub struct Bundle {
    files: &'static [(&'static str, &'static [u8])],
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle").field("files", &self.files.len()).finish()
    }
}

/// A file to send: its bytes (encoded as `encoding` says), its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    pub body: &'static [u8],
    pub content_type: &'static str,
    /// `br` or `gzip` when the body is that variant; `None` for the file itself.
    pub encoding: Option<&'static str>,
}

impl Bundle {
    /// The widget built into this binary (`confab.js`, `confab-widget.<hash>.{js,wasm}`).
    pub fn widget() -> Option<Self> {
        Self::new(WIDGET)
    }

    /// The console built into this binary (`index.html` and its files).
    pub fn console() -> Option<Self> {
        Self::new(CONSOLE)
    }

    /// A bundle of these files (sorted by path); `None` when there are none.
    pub fn new(files: &'static [(&'static str, &'static [u8])]) -> Option<Self> {
        (!files.is_empty()).then_some(Self { files })
    }

    /// The file at `path` itself.
    pub fn get(&self, path: &str) -> Option<&'static [u8]> {
        self.files.binary_search_by(|(name, _)| (*name).cmp(path)).ok().map(|at| self.files[at].1)
    }

    /// What to send for `path` (relative, no leading `/`; `""` or a path ending in `/` means
    /// its `index.html`) to a client whose `Accept-Encoding` is `accept_encoding`: the brotli
    /// variant if it accepts `br` and there is one, else the gzip one, else the file. `None`
    /// when there is no such file (a `.br` or `.gz` variant is never served as a file of its
    /// own).
    pub fn serve(&self, path: &str, accept_encoding: &str) -> Option<Served> {
        let path = if path.is_empty() || path.ends_with('/') {
            format!("{path}index.html")
        } else {
            path.to_owned()
        };
        if path.ends_with(".br") || path.ends_with(".gz") {
            return None;
        }
        let file = self.get(&path)?;
        let content_type = content_type(&path);
        for (encoding, suffix) in [("br", ".br"), ("gzip", ".gz")] {
            if accepts(accept_encoding, encoding)
                && let Some(body) = self.get(&format!("{path}{suffix}"))
            {
                return Some(Served { body, content_type, encoding: Some(encoding) });
            }
        }
        Some(Served { body: file, content_type, encoding: None })
    }
}

/// Whether an `Accept-Encoding` value accepts `encoding` (listed, or `*`, and not `;q=0`).
fn accepts(accept_encoding: &str, encoding: &str) -> bool {
    accept_encoding.split(',').any(|item| {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or_default().trim();
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        (name.eq_ignore_ascii_case(encoding) || name == "*") && !refused
    })
}

/// The content type of the files the builds make, by extension.
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static FILES: &[(&str, &[u8])] = &[
        ("app.4f3a9c2e1b7d6a05.wasm", b"wasm"),
        ("confab.js", b"loader"),
        ("confab.js.br", b"loader-br"),
        ("confab.js.gz", b"loader-gz"),
        ("index.html", b"<!doctype html>"),
        ("index.html.gz", b"index-gz"),
    ];

    fn bundle() -> Bundle {
        Bundle::new(FILES).unwrap()
    }

    #[test]
    fn the_best_variant_the_client_accepts_is_served() {
        let served = |path, accept| bundle().serve(path, accept).map(|s| (s.body, s.encoding));
        assert_eq!(served("confab.js", "gzip, deflate, br"), Some((&b"loader-br"[..], Some("br"))));
        assert_eq!(served("confab.js", "gzip"), Some((&b"loader-gz"[..], Some("gzip"))));
        assert_eq!(served("confab.js", "br;q=0, gzip"), Some((&b"loader-gz"[..], Some("gzip"))));
        assert_eq!(served("confab.js", "*"), Some((&b"loader-br"[..], Some("br"))));
        assert_eq!(served("confab.js", ""), Some((&b"loader"[..], None)));
        assert_eq!(served("index.html", "br"), Some((&b"<!doctype html>"[..], None)));
        assert_eq!(served("", "gzip"), Some((&b"index-gz"[..], Some("gzip"))), "the index");
    }

    #[test]
    fn content_types_follow_extensions_and_unknown_paths_are_none() {
        let wasm = bundle().serve("app.4f3a9c2e1b7d6a05.wasm", "br").unwrap();
        assert_eq!((wasm.content_type, wasm.encoding), ("application/wasm", None));
        assert_eq!(
            bundle().serve("confab.js", "").unwrap().content_type,
            "text/javascript; charset=utf-8"
        );
        assert_eq!(bundle().serve("missing.js", "br"), None);
        assert_eq!(bundle().serve("confab.js.br", "br"), None, "a variant is not a file");
        assert_eq!(bundle().serve("../confab.js", ""), None);
        assert!(Bundle::new(&[]).is_none());
    }

    #[test]
    fn without_the_embed_feature_nothing_is_embedded() {
        if cfg!(not(feature = "embed")) {
            assert!(Bundle::widget().is_none() && Bundle::console().is_none());
        } else {
            assert!(Bundle::widget().and_then(|b| b.get("confab.js")).is_some());
        }
    }
}
