//! Fetching a site's own pages for its knowledge (issue 15): single URLs and `sitemap.xml`
//! files, only on the site's origins, as a polite crawler.
//!
//! - **Own origins only.** A URL, a sitemap entry or a redirect that leaves the site's origins is
//!   an error that names it: a sitemap cannot make the relay fetch another host's pages.
//! - **robots.txt** of each origin is read once (as `ConfabBot`, falling back to `*`); a URL it
//!   disallows is an error. A missing robots.txt (4xx) allows everything; one that cannot be read
//!   (5xx, network) stops the fetch, as crawlers do.
//! - **Politeness.** One request at a time, at least `interval` apart per origin (longer when
//!   robots.txt asks with `Crawl-delay`, up to 10 s).
//! - **Bounded.** Every body is read up to its cap (`max_bytes`, `max_sitemap_bytes`) and no
//!   further; no compression is asked for, and a compressed answer is refused, so nothing
//!   expands after the cap; redirects are followed by hand (at most 5, each checked); sitemap
//!   indexes nest at most 3 deep, a sitemap seen twice is a loop, and at most `max_pages` URLs
//!   come out.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use quick_xml::Reader;
use quick_xml::events::Event;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, LOCATION};
use texting_robots::Robot;
use tokio::time::Instant;
use url::{Origin, Url};

/// The name the relay fetches as, for robots.txt.
pub const USER_AGENT: &str = concat!("ConfabBot/", env!("CARGO_PKG_VERSION"));
/// The agent robots.txt rules are matched against.
const ROBOT_NAME: &str = "ConfabBot";
const MAX_REDIRECTS: usize = 5;
const MAX_SITEMAP_DEPTH: usize = 3;
const MAX_CRAWL_DELAY: Duration = Duration::from_secs(10);
/// robots.txt files are read up to this size (Google reads 500 KiB).
const MAX_ROBOTS_BYTES: u64 = 512 * 1024;

/// How much a fetch may take.
#[derive(Debug, Clone)]
pub struct FetchLimits {
    /// A page's body, at most.
    pub max_bytes: u64,
    /// A sitemap's body, at most.
    pub max_sitemap_bytes: u64,
    /// URLs a sitemap (with the sitemaps it names) may list.
    pub max_pages: usize,
    /// Between two requests to one origin, at least.
    pub interval: Duration,
    /// One request, at most.
    pub timeout: Duration,
}

impl Default for FetchLimits {
    fn default() -> Self {
        Self {
            max_bytes: 5 * 1024 * 1024,
            max_sitemap_bytes: 10 * 1024 * 1024,
            max_pages: 1_000,
            interval: Duration::from_millis(250),
            timeout: Duration::from_secs(20),
        }
    }
}

/// A page as fetched.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Where it was found (after redirects).
    pub url: Url,
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// Why a fetch stopped; each names the URL it concerns.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FetchError {
    #[error("{url}: not on the site's origins ({origins}); only the site's own pages are fetched")]
    OffOrigin { url: String, origins: String },
    #[error("{url}: not an http(s) URL")]
    NotHttp { url: String },
    #[error("{url}: disallowed by the site's robots.txt for {ROBOT_NAME}")]
    Disallowed { url: String },
    #[error("{url}: robots.txt could not be read ({reason}); nothing is fetched without it")]
    Robots { url: String, reason: String },
    #[error("{url}: the server answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: larger than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("{url}: compressed ({encoding}); give an uncompressed file")]
    Compressed { url: String, encoding: String },
    #[error("{url}: more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects { url: String },
    #[error("{url}: sitemap loop (this sitemap is listed again by a sitemap it lists)")]
    SitemapLoop { url: String },
    #[error("{url}: sitemap indexes nest more than {MAX_SITEMAP_DEPTH} deep")]
    SitemapTooDeep { url: String },
    #[error("{url}: the sitemaps list more than {limit} pages")]
    TooManyPages { url: String, limit: usize },
    #[error("{url}: not a sitemap ({reason})")]
    NotASitemap { url: String, reason: String },
    #[error("{url}: {reason}")]
    Network { url: String, reason: String },
}

/// Fetches pages and sitemaps of the origins it was made for; one per ingestion.
#[derive(Debug)]
pub struct Fetcher {
    client: reqwest::Client,
    origins: Vec<Origin>,
    limits: FetchLimits,
    robots: HashMap<Origin, Option<Robot>>,
    next_at: HashMap<Origin, Instant>,
}

impl Fetcher {
    /// A fetcher for pages of `origins` (a site's, like `https://shop.example`).
    pub fn new(origins: &[String], limits: FetchLimits) -> Result<Self, FetchError> {
        let origins = origins
            .iter()
            .map(|o| Url::parse(o).map(|u| u.origin()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| FetchError::Network { url: origins.join(", "), reason: e.to_string() })?;
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(limits.timeout)
            .build()
            .map_err(|e| FetchError::Network { url: String::new(), reason: e.to_string() })?;
        Ok(Self { client, origins, limits, robots: HashMap::new(), next_at: HashMap::new() })
    }

    fn check_origin(&self, url: &Url) -> Result<(), FetchError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::NotHttp { url: url.to_string() });
        }
        if self.origins.contains(&url.origin()) {
            return Ok(());
        }
        let origins: Vec<String> = self.origins.iter().map(Origin::ascii_serialization).collect();
        Err(FetchError::OffOrigin { url: url.to_string(), origins: origins.join(", ") })
    }

    /// Waits for the origin's turn, then makes it wait `gap` for the next.
    async fn polite(&mut self, origin: &Origin, gap: Duration) {
        if let Some(at) = self.next_at.get(origin) {
            tokio::time::sleep_until(*at).await;
        }
        self.next_at.insert(origin.clone(), Instant::now() + gap);
    }

    fn gap(&self, origin: &Origin) -> Duration {
        let delay = self
            .robots
            .get(origin)
            .and_then(|r| r.as_ref()?.delay)
            .map(|s| Duration::from_secs_f32(s.clamp(0.0, MAX_CRAWL_DELAY.as_secs_f32())));
        delay.map_or(self.limits.interval, |d| d.max(self.limits.interval))
    }

    /// One GET, polite, bounded to `cap` bytes, without following redirects.
    async fn get(&mut self, url: &Url, cap: u64) -> Result<Response, FetchError> {
        let origin = url.origin();
        let gap = self.gap(&origin);
        self.polite(&origin, gap).await;
        let network = |e: reqwest::Error| FetchError::Network {
            url: url.to_string(),
            reason: without_url(&e),
        };
        let response = self.client.get(url.clone()).send().await.map_err(network)?;
        let status = response.status();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok().map(str::to_owned))
        };
        let (location, content_type, encoding) =
            (header(LOCATION), header(CONTENT_TYPE), header(CONTENT_ENCODING));
        if status.is_redirection() {
            return Ok(Response {
                status: status.as_u16(),
                location,
                content_type,
                body: Bytes::new(),
            });
        }
        if let Some(encoding) = encoding.filter(|e| !e.eq_ignore_ascii_case("identity")) {
            return Err(FetchError::Compressed { url: url.to_string(), encoding });
        }
        if response.content_length().is_some_and(|n| n > cap) {
            return Err(FetchError::TooLarge { url: url.to_string(), limit: cap });
        }
        let mut body = BytesMut::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(network)?;
            if (body.len() + chunk.len()) as u64 > cap {
                return Err(FetchError::TooLarge { url: url.to_string(), limit: cap });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response { status: status.as_u16(), location, content_type, body: body.freeze() })
    }

    /// The origin's robots.txt rules, read on first use.
    async fn allowed(&mut self, url: &Url) -> Result<bool, FetchError> {
        let origin = url.origin();
        if !self.robots.contains_key(&origin) {
            let mut robots_url = url.clone();
            robots_url.set_path("/robots.txt");
            robots_url.set_query(None);
            robots_url.set_fragment(None);
            let failed =
                |reason: String| FetchError::Robots { url: robots_url.to_string(), reason };
            let rules = match self.get(&robots_url, MAX_ROBOTS_BYTES).await {
                Ok(r) if (200..300).contains(&r.status) => {
                    Some(Robot::new(ROBOT_NAME, &r.body).map_err(|e| failed(e.to_string()))?)
                }
                // Missing (or moved: not followed for robots.txt): everything is allowed.
                Ok(r) if (300..500).contains(&r.status) => None,
                Ok(r) => return Err(failed(format!("the server answered {}", r.status))),
                Err(FetchError::TooLarge { .. }) => return Err(failed("too large".into())),
                Err(error) => return Err(failed(error.to_string())),
            };
            self.robots.insert(origin.clone(), rules);
        }
        Ok(self
            .robots
            .get(&origin)
            .and_then(Option::as_ref)
            .is_none_or(|r| r.allowed(url.as_str())))
    }

    /// A URL of the site's, following its redirects (each checked): origin, robots.txt, size.
    async fn fetch(&mut self, url: &Url, cap: u64) -> Result<Fetched, FetchError> {
        let mut url = url.clone();
        for _ in 0..=MAX_REDIRECTS {
            self.check_origin(&url)?;
            if !self.allowed(&url).await? {
                return Err(FetchError::Disallowed { url: url.to_string() });
            }
            let response = self.get(&url, cap).await?;
            match response.status {
                200..=299 => {
                    return Ok(Fetched {
                        url,
                        content_type: response.content_type,
                        body: response.body,
                    });
                }
                300..=399 => {
                    let next = response.location.and_then(|l| url.join(&l).ok());
                    let Some(next) = next else {
                        return Err(FetchError::Status {
                            url: url.to_string(),
                            status: response.status,
                        });
                    };
                    url = next;
                }
                status => return Err(FetchError::Status { url: url.to_string(), status }),
            }
        }
        Err(FetchError::TooManyRedirects { url: url.to_string() })
    }

    /// A page of the site.
    pub async fn page(&mut self, url: &Url) -> Result<Fetched, FetchError> {
        self.fetch(url, self.limits.max_bytes).await
    }

    /// The pages a sitemap lists, with those of the sitemaps it names (a sitemap index), in
    /// order and each once. Every entry must be on the site's origins.
    pub async fn sitemap(&mut self, url: &Url) -> Result<Vec<Url>, FetchError> {
        let mut pages = Vec::new();
        let mut seen_pages = HashSet::new();
        let mut seen_maps = HashSet::new();
        // Depth-first, so that the order is the sitemaps' own.
        let mut stack = vec![(url.clone(), 0usize)];
        while let Some((map, depth)) = stack.pop() {
            if depth > MAX_SITEMAP_DEPTH {
                return Err(FetchError::SitemapTooDeep { url: map.to_string() });
            }
            if !seen_maps.insert(map.clone()) {
                return Err(FetchError::SitemapLoop { url: map.to_string() });
            }
            let fetched = self.fetch(&map, self.limits.max_sitemap_bytes).await?;
            let listed = parse_sitemap(&fetched.url, &fetched.body)?;
            let mut children = Vec::new();
            for loc in listed.locations {
                let entry = fetched.url.join(&loc).map_err(|e| FetchError::NotASitemap {
                    url: fetched.url.to_string(),
                    reason: format!("`{loc}` is not a URL: {e}"),
                })?;
                self.check_origin(&entry)?;
                if listed.index {
                    children.push((entry, depth + 1));
                } else if seen_pages.insert(entry.clone()) {
                    if pages.len() == self.limits.max_pages {
                        return Err(FetchError::TooManyPages {
                            url: map.to_string(),
                            limit: self.limits.max_pages,
                        });
                    }
                    pages.push(entry);
                }
            }
            stack.extend(children.into_iter().rev());
        }
        Ok(pages)
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    location: Option<String>,
    content_type: Option<String>,
    body: Bytes,
}

/// A reqwest error's text without the URL it carries (the caller names the URL once).
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(&format!(" ({url})"), "").replace(url.as_str(), "");
    }
    if error.is_timeout() { "timed out".into() } else { text }
}

/// What a sitemap lists: page URLs (`<urlset>`) or other sitemaps (`<sitemapindex>`).
#[derive(Debug, PartialEq, Eq)]
struct Listed {
    index: bool,
    locations: Vec<String>,
}

/// Reads `<loc>` entries of a `<urlset>` or `<sitemapindex>` (namespaces ignored).
fn parse_sitemap(url: &Url, body: &[u8]) -> Result<Listed, FetchError> {
    let bad = |reason: String| FetchError::NotASitemap { url: url.to_string(), reason };
    let text = std::str::from_utf8(body).map_err(|_| bad("not UTF-8".into()))?;
    let mut reader = Reader::from_str(text);
    let mut root = None;
    let mut in_loc = false;
    let mut loc = String::new();
    let mut locations = Vec::new();
    loop {
        match reader.read_event().map_err(|e| bad(e.to_string()))? {
            Event::Start(start) => {
                let name = start.local_name();
                match (root, name.as_ref()) {
                    (None, "urlset") => root = Some(false),
                    (None, "sitemapindex") => root = Some(true),
                    (None, other) => {
                        return Err(bad(format!(
                            "its root is <{other}>, not <urlset> or <sitemapindex>"
                        )));
                    }
                    (Some(_), "loc") => {
                        in_loc = true;
                        loc.clear();
                    }
                    _ => {}
                }
            }
            Event::Text(part) if in_loc => loc.push_str(&part.xml10_content()),
            Event::CData(part) if in_loc => loc.push_str(&part),
            Event::GeneralRef(reference) if in_loc => {
                let resolved = match reference.as_ref() {
                    "amp" => Some('&'),
                    "lt" => Some('<'),
                    "gt" => Some('>'),
                    "quot" => Some('"'),
                    "apos" => Some('\''),
                    _ => reference.resolve_char_ref().ok().flatten(),
                };
                loc.push(resolved.ok_or_else(|| bad("an unknown entity in <loc>".into()))?);
            }
            Event::End(end) if in_loc && end.local_name().as_ref() == "loc" => {
                in_loc = false;
                locations.push(loc.trim().to_owned());
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if in_loc {
        return Err(bad("it ends inside a <loc>".into()));
    }
    let index = root.ok_or_else(|| bad("it is empty".into()))?;
    Ok(Listed { index, locations })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn a_urlset_and_an_index_list_their_locations() {
        let set = br#"<?xml version="1.0" encoding="UTF-8"?>
            <urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
              <url><loc> https://shop.example/a?x=1&amp;y=2 </loc><lastmod>2026-01-01</lastmod></url>
              <url><loc><![CDATA[https://shop.example/b]]></loc></url>
            </urlset>"#;
        let listed = parse_sitemap(&url("https://shop.example/sitemap.xml"), set).unwrap();
        assert_eq!(
            listed,
            Listed {
                index: false,
                locations: vec![
                    "https://shop.example/a?x=1&y=2".into(),
                    "https://shop.example/b".into()
                ]
            }
        );
        let index = br#"<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
            <sitemap><loc>https://shop.example/s1.xml</loc></sitemap></sitemapindex>"#;
        let listed = parse_sitemap(&url("https://shop.example/i.xml"), index).unwrap();
        assert!(listed.index);
        assert_eq!(listed.locations, ["https://shop.example/s1.xml"]);
    }

    #[test]
    fn what_is_not_a_sitemap_is_refused_with_its_url() {
        let at = url("https://shop.example/x.xml");
        for body in [&b"<html><body>hi</body></html>"[..], b"", b"\xff\xfe", b"<urlset><loc>"] {
            let error = parse_sitemap(&at, body).map(|_| ()).unwrap_err();
            assert!(error.to_string().starts_with("https://shop.example/x.xml: "), "{error}");
        }
    }
}

/// The fetcher against a real HTTP server on 127.0.0.1 playing a small site.
#[cfg(test)]
mod http_tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::Router;
    use axum::extract::{Request, State};
    use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use tokio::time::Instant;
    use url::Url;

    use super::{FetchError, FetchLimits, Fetcher};

    type Log = Arc<Mutex<Vec<(String, Instant)>>>;

    /// Serves the test site; `robots` is the status of its robots.txt (200 with rules, or not).
    async fn site(robots: StatusCode) -> (Url, Log) {
        let log: Log = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let app = Router::new()
            .fallback(move |State(log): State<Log>, request: Request| async move {
                let path = request.uri().path().to_owned();
                log.lock().unwrap().push((path.clone(), Instant::now()));
                page(&path, robots)
            })
            .with_state(log.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (base, log)
    }

    fn xml(body: &str) -> Response {
        ([(header::CONTENT_TYPE, "application/xml")], body.to_owned()).into_response()
    }

    fn page(path: &str, robots: StatusCode) -> Response {
        let urlset = |locs: &[&str]| {
            let entries: String =
                locs.iter().map(|l| format!("<url><loc>{l}</loc></url>")).collect();
            xml(&format!(
                "<urlset xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">{entries}</urlset>"
            ))
        };
        let index = |locs: &[&str]| {
            let entries: String =
                locs.iter().map(|l| format!("<sitemap><loc>{l}</loc></sitemap>")).collect();
            xml(&format!("<sitemapindex>{entries}</sitemapindex>"))
        };
        match path {
            "/robots.txt" if robots == StatusCode::OK => {
                "User-agent: *\nDisallow: /private\n".into_response()
            }
            "/robots.txt" => robots.into_response(),
            "/sitemap.xml" => urlset(&["/a", "b", "/a"]),
            "/index.xml" => index(&["/sitemap.xml", "/more.xml"]),
            "/more.xml" => urlset(&["/c"]),
            "/loop.xml" => index(&["/loop2.xml"]),
            "/loop2.xml" => index(&["/loop.xml"]),
            "/deep0.xml" => index(&["/deep1.xml"]),
            "/deep1.xml" => index(&["/deep2.xml"]),
            "/deep2.xml" => index(&["/deep3.xml"]),
            "/deep3.xml" => index(&["/deep4.xml"]),
            "/deep4.xml" => urlset(&["/a"]),
            "/off.xml" => urlset(&["/a", "http://elsewhere.example/x"]),
            "/html.xml" => "<html><body>not a sitemap</body></html>".into_response(),
            "/big" => "x".repeat(2048).into_response(),
            "/redirect-in" => {
                (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, "/a")]).into_response()
            }
            "/redirect-off" => {
                (StatusCode::FOUND, [(header::LOCATION, "http://elsewhere.example/x")])
                    .into_response()
            }
            "/gzipped" => {
                let mut headers = HeaderMap::new();
                headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                (headers, vec![0x1f_u8, 0x8b, 8, 0]).into_response()
            }
            "/a" | "/b" | "/c" | "/private/p" => (
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                format!("<html><body><main><h1>Page {path}</h1></main></body></html>"),
            )
                .into_response(),
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    }

    fn limits() -> FetchLimits {
        FetchLimits {
            max_bytes: 1024,
            max_sitemap_bytes: 64 * 1024,
            max_pages: 3,
            interval: Duration::from_millis(40),
            timeout: Duration::from_secs(5),
        }
    }

    fn fetcher(base: &Url) -> Fetcher {
        Fetcher::new(&[base.origin().ascii_serialization()], limits()).unwrap()
    }

    #[tokio::test]
    async fn a_sitemap_index_lists_its_sitemaps_pages_once_in_order() {
        let (base, _) = site(StatusCode::OK).await;
        let pages = fetcher(&base).sitemap(&base.join("/index.xml").unwrap()).await.unwrap();
        let paths: Vec<&str> = pages.iter().map(Url::path).collect();
        assert_eq!(paths, ["/a", "/b", "/c"]);
    }

    #[tokio::test]
    async fn sitemaps_that_loop_nest_too_deep_list_too_much_or_leave_the_site_are_refused() {
        let (base, _) = site(StatusCode::OK).await;
        let at = |path: &str| base.join(path).unwrap();
        let mut fetcher = fetcher(&base);
        let error = fetcher.sitemap(&at("/loop.xml")).await.unwrap_err();
        assert_eq!(error, FetchError::SitemapLoop { url: at("/loop.xml").to_string() });
        let error = fetcher.sitemap(&at("/deep0.xml")).await.unwrap_err();
        assert_eq!(error, FetchError::SitemapTooDeep { url: at("/deep4.xml").to_string() });
        let error = fetcher.sitemap(&at("/off.xml")).await.unwrap_err();
        assert_eq!(
            error,
            FetchError::OffOrigin {
                url: "http://elsewhere.example/x".into(),
                origins: base.origin().ascii_serialization()
            }
        );
        let mut small = Fetcher::new(
            &[base.origin().ascii_serialization()],
            FetchLimits { max_pages: 2, ..limits() },
        )
        .unwrap();
        let error = small.sitemap(&at("/index.xml")).await.unwrap_err();
        assert_eq!(error, FetchError::TooManyPages { url: at("/more.xml").to_string(), limit: 2 });
        let error = fetcher.sitemap(&at("/html.xml")).await.unwrap_err();
        assert!(matches!(error, FetchError::NotASitemap { .. }), "{error}");
    }

    #[tokio::test]
    async fn pages_are_fetched_only_where_the_site_and_its_robots_txt_allow() {
        let (base, _) = site(StatusCode::OK).await;
        let at = |path: &str| base.join(path).unwrap();
        let mut fetcher = fetcher(&base);
        let page = fetcher.page(&at("/redirect-in")).await.unwrap();
        assert_eq!(page.url, at("/a"));
        assert_eq!(page.content_type.as_deref(), Some("text/html; charset=utf-8"));
        assert!(String::from_utf8_lossy(&page.body).contains("Page /a"));
        let refused = [
            ("/private/p", FetchError::Disallowed { url: at("/private/p").to_string() }),
            ("/big", FetchError::TooLarge { url: at("/big").to_string(), limit: 1024 }),
            ("/missing", FetchError::Status { url: at("/missing").to_string(), status: 404 }),
            (
                "/gzipped",
                FetchError::Compressed { url: at("/gzipped").to_string(), encoding: "gzip".into() },
            ),
            (
                "/redirect-off",
                FetchError::OffOrigin {
                    url: "http://elsewhere.example/x".into(),
                    origins: base.origin().ascii_serialization(),
                },
            ),
        ];
        for (path, expected) in refused {
            assert_eq!(fetcher.page(&at(path)).await.unwrap_err(), expected, "{path}");
        }
        let other = Url::parse("http://elsewhere.example/a").unwrap();
        assert!(matches!(fetcher.page(&other).await, Err(FetchError::OffOrigin { .. })));
        let ftp = Url::parse("ftp://127.0.0.1/a").unwrap();
        assert!(matches!(fetcher.page(&ftp).await, Err(FetchError::NotHttp { .. })));
    }

    #[tokio::test]
    async fn robots_txt_is_read_once_and_requests_are_spaced_out() {
        let (base, log) = site(StatusCode::OK).await;
        let mut fetcher = fetcher(&base);
        for path in ["/a", "/b", "/c"] {
            fetcher.page(&base.join(path).unwrap()).await.unwrap();
        }
        let log = log.lock().unwrap().clone();
        let paths: Vec<&str> = log.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["/robots.txt", "/a", "/b", "/c"]);
        for pair in log.windows(2) {
            let gap = pair[1].1 - pair[0].1;
            assert!(gap >= Duration::from_millis(35), "{} after {gap:?}", pair[1].0);
        }
    }

    #[tokio::test]
    async fn a_missing_robots_txt_allows_everything_and_a_failing_one_stops_the_fetch() {
        let (open, _) = site(StatusCode::NOT_FOUND).await;
        let page = fetcher(&open).page(&open.join("/private/p").unwrap()).await;
        assert!(page.is_ok(), "{page:?}");
        let (broken, _) = site(StatusCode::INTERNAL_SERVER_ERROR).await;
        let error = fetcher(&broken).page(&broken.join("/a").unwrap()).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "{}: robots.txt could not be read (the server answered 500); nothing is fetched without it",
                broken.join("/robots.txt").unwrap()
            )
        );
    }
}
