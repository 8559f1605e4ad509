//! The client's address behind trusted reverse proxies: the [`TrustedProxy`] networks of
//! `server.trusted_proxies`, and [`client_ip`], which believes `X-Forwarded-For` only from them
//! (and says once, in the log, when a proxy seems to be in front but none is listed).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::HeaderMap;
use axum::http::header::HeaderName;
use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// A network whose hosts are believed when they say, in `X-Forwarded-For`, whom they forward
/// for: `10.0.0.0/8`, `::1/128`, or a bare address (`127.0.0.1`, a single host).
///
/// IPv4-mapped IPv6 networks (`::ffff:10.0.0.0/104`) are read as the IPv4 network they map, since
/// addresses are compared in their IPv4 form.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrustedProxy(IpNet);

impl TrustedProxy {
    /// Whether `ip` (compared as IPv4 when it is IPv4-mapped) is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }

    pub fn network(&self) -> IpNet {
        self.0
    }
}

/// Why a trusted-proxy entry in the configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustedProxyError {
    #[error("`{input}` is not an IP address or a CIDR network such as 10.0.0.0/8 or ::1/128")]
    Invalid { input: String },
    #[error("`{input}` has address bits set past its prefix; write the network as {network}")]
    HostBitsSet { input: String, network: IpNet },
    #[error(
        "`{input}` would trust every address, so any client could choose its own IP with \
         X-Forwarded-For"
    )]
    TrustsEverything { input: String },
}

impl FromStr for TrustedProxy {
    type Err = TrustedProxyError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let text = input.trim();
        let invalid = || TrustedProxyError::Invalid { input: input.to_owned() };
        let net = if text.contains('/') {
            text.parse::<IpNet>().map_err(|_| invalid())?
        } else {
            IpNet::from(text.parse::<IpAddr>().map_err(|_| invalid())?)
        };
        if net.trunc() != net {
            return Err(TrustedProxyError::HostBitsSet {
                input: input.to_owned(),
                network: net.trunc(),
            });
        }
        let net = ipv4_form(net);
        if net.prefix_len() == 0 {
            return Err(TrustedProxyError::TrustsEverything { input: input.to_owned() });
        }
        Ok(Self(net))
    }
}

/// An IPv6 network inside `::ffff:0:0/96` as the IPv4 network it maps.
fn ipv4_form(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.network().to_ipv4_mapped()
        && let Ok(v4_net) = Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(v4_net);
    }
    net
}

impl fmt::Display for TrustedProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for TrustedProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustedProxy({})", self.0)
    }
}

impl Serialize for TrustedProxy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TrustedProxy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

fn is_trusted(ip: IpAddr, trusted: &[TrustedProxy]) -> bool {
    trusted.iter().any(|net| net.contains(ip))
}

/// The client's address, as far as it can be believed.
///
/// - A peer that is not a trusted proxy is the client: `X-Forwarded-For` is ignored, since anyone
///   can send one.
/// - Behind trusted proxies, `X-Forwarded-For` (every instance of the header, in order, read as one
///   comma-separated list) is walked from the right, the end the proxies append to. Trusted
///   proxies are skipped, and the first address that is not one is the client.
/// - If every address is a trusted proxy, the left-most is the client (a request from inside the
///   proxies' own network); with no header, the peer is.
/// - The header is read as bytes, entry by entry, and an entry that is not an address (`unknown`,
///   an obfuscated name, `unix:`, bytes that are not UTF-8) is skipped, as are empty ones: one bad
///   entry does not make every visitor behind the proxies share the proxies' address and limits.
///   Skipping is sound because the walk reaches an entry only through trusted proxies, each of
///   which appended the address of the hop before it: the entries left of the first untrusted
///   address are never read, whatever a client put there. (A trusted proxy that writes a name
///   instead of its peer's address when that peer is an outside client would let the client
///   choose its own address; such a proxy must not be listed.)
///
/// Entries may carry a port (`203.0.113.7:4711`, `[2001:db8::1]:443`) or brackets, which are
/// dropped. IPv4-mapped IPv6 addresses are returned, and compared, in their IPv4 form. The
/// standard `Forwarded` header and `X-Real-IP` are not read.
///
/// With no trusted proxies at all, a loopback or private peer that sends `X-Forwarded-For` is
/// most likely a reverse proxy nobody listed, behind which every visitor shares one address and
/// one set of limits: that is logged once per process, naming the setting to change.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[TrustedProxy]) -> IpAddr {
    let mut client = peer.to_canonical();
    if !is_trusted(client, trusted) {
        if trusted.is_empty() {
            warn_once_about_an_unlisted_proxy(&UNLISTED_PROXY_WARNED, client, headers);
        }
        return client;
    }
    for value in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        for entry in value.as_bytes().rsplit(|&byte| byte == b',') {
            let Some(address) = parse_forwarded_address(entry) else {
                continue;
            };
            client = address;
            if !is_trusted(address, trusted) {
                return client;
            }
        }
    }
    client
}

/// One `X-Forwarded-For` entry as an address; `None` for an empty or malformed one.
fn parse_forwarded_address(entry: &[u8]) -> Option<IpAddr> {
    let entry = std::str::from_utf8(entry.trim_ascii()).ok()?;
    if entry.is_empty() {
        return None;
    }
    let address = if let Ok(ip) = entry.parse::<IpAddr>() {
        ip
    } else if let Ok(socket) = entry.parse::<SocketAddr>() {
        socket.ip()
    } else {
        IpAddr::V6(entry.strip_prefix('[')?.strip_suffix(']')?.parse().ok()?)
    };
    Some(address.to_canonical())
}

/// What is logged when a proxy seems to be in front of the relay but none is trusted.
const UNLISTED_PROXY_WARNING: &str = "a request from a loopback or private address carried \
    X-Forwarded-For, but server.trusted_proxies is empty, so the header is ignored and every \
    visitor behind that proxy shares its address and its per-visitor limits; list the proxy's \
    address or network in server.trusted_proxies (for example trusted_proxies = [\"127.0.0.1\"] \
    under [server]). Logged once.";

/// Whether the warning about an unlisted proxy has been logged by this process. A proxy sends the
/// header with every request, so once is enough, and more would flood the log.
static UNLISTED_PROXY_WARNED: AtomicBool = AtomicBool::new(false);

/// Logs [`UNLISTED_PROXY_WARNING`] if `peer` is a loopback or private address that sent
/// `X-Forwarded-For` and `warned` was not yet set; returns whether it logged. (The caller has
/// checked that no proxy is trusted; `warned` is a parameter so that tests have their own.)
fn warn_once_about_an_unlisted_proxy(
    warned: &AtomicBool,
    peer: IpAddr,
    headers: &HeaderMap,
) -> bool {
    if !is_loopback_or_private(peer)
        || !headers.contains_key(X_FORWARDED_FOR)
        || warned.load(Ordering::Relaxed)
        || warned.swap(true, Ordering::Relaxed)
    {
        return false;
    }
    tracing::warn!(%peer, "{UNLISTED_PROXY_WARNING}");
    true
}

/// Addresses a reverse proxy in front of the relay usually has: loopback, RFC 1918, link-local,
/// IPv6 unique local (`fc00::/7`) and link-local.
fn is_loopback_or_private(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unique_local() || v6.is_unicast_link_local(),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use serde_json::json;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn proxies(list: &[&str]) -> Vec<TrustedProxy> {
        list.iter().map(|net| net.parse().unwrap()).collect()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_x_forwarded_for_says() {
        let headers = forwarded(&["198.51.100.1"]);
        let client = client_ip(ip("203.0.113.7"), &headers, &proxies(&["10.0.0.0/8"]));
        assert_eq!(client, ip("203.0.113.7"));
    }

    #[test]
    fn with_no_trusted_proxies_x_forwarded_for_is_ignored() {
        let headers = forwarded(&["198.51.100.1"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &headers, &[]), ip("10.0.0.1"));
    }

    #[test]
    fn a_trusted_peer_yields_the_right_most_untrusted_address() {
        // The left-most entry is whatever the client claimed; only the proxy's own entry counts.
        let headers = forwarded(&["198.51.100.1, 203.0.113.7"]);
        let client = client_ip(ip("10.0.0.1"), &headers, &proxies(&["10.0.0.0/8"]));
        assert_eq!(client, ip("203.0.113.7"));
    }

    #[test]
    fn a_chain_of_trusted_proxies_is_walked_from_the_right() {
        let headers = forwarded(&["198.51.100.1, 203.0.113.7, 192.168.1.5, 10.1.2.3"]);
        let trusted = proxies(&["10.0.0.0/8", "192.168.0.0/16"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &headers, &trusted), ip("203.0.113.7"));
    }

    #[test]
    fn several_x_forwarded_for_headers_read_as_one_list_in_order() {
        let headers = forwarded(&["198.51.100.1", "203.0.113.7, 10.1.2.3", "10.4.5.6"]);
        let trusted = proxies(&["10.0.0.0/8"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &headers, &trusted), ip("203.0.113.7"));
    }

    #[test]
    fn a_trusted_peer_without_x_forwarded_for_is_the_client() {
        let client = client_ip(ip("10.0.0.1"), &HeaderMap::new(), &proxies(&["10.0.0.0/8"]));
        assert_eq!(client, ip("10.0.0.1"));
    }

    #[test]
    fn when_every_hop_is_trusted_the_left_most_is_the_client() {
        let headers = forwarded(&["10.9.9.9, 10.1.2.3"]);
        let client = client_ip(ip("10.0.0.1"), &headers, &proxies(&["10.0.0.0/8"]));
        assert_eq!(client, ip("10.9.9.9"));
    }

    #[test]
    fn an_unparsable_entry_is_skipped_and_the_walk_goes_on() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let headers = forwarded(&["198.51.100.1, unknown, 10.1.2.3"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &headers, &trusted), ip("198.51.100.1"));
        let headers = forwarded(&["198.51.100.1, _hidden"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &headers, &trusted), ip("198.51.100.1"));
        let headers = forwarded(&["198.51.100.1", "1.2.3.4.5, unix:"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &headers, &trusted), ip("198.51.100.1"));
        // Still, the walk stops at the first untrusted address: what is left of it is unread.
        let headers = forwarded(&["6.6.6.6, junk, 203.0.113.7, nonsense, 10.1.2.3"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &headers, &trusted), ip("203.0.113.7"));
        // With nothing usable, the peer is the client.
        let headers = forwarded(&["unknown, , _x"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &headers, &trusted), ip("10.0.0.1"));
    }

    fn forwarded_bytes(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_bytes(value).unwrap());
        }
        headers
    }

    #[test]
    fn bytes_that_are_not_utf8_spoil_only_their_own_entry() {
        let trusted = proxies(&["10.0.0.0/8"]);
        // A client's garbage on the left, the proxy's entry on the right: the proxy's is read.
        let headers = forwarded_bytes(&[b"\xff\xfe\x80, 203.0.113.7"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &headers, &trusted), ip("203.0.113.7"));
        let headers = forwarded_bytes(&[b"198.51.100.1", b"203.0.113.7\xff, 10.1.2.3"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &headers, &trusted), ip("198.51.100.1"));
        let headers = forwarded_bytes(&[b"\t203.0.113.7 \t,\xe9"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &headers, &trusted), ip("203.0.113.7"));
    }

    #[test]
    fn forwarded_entries_are_parsed_from_bytes() {
        for (entry, expected) in [
            (&b"203.0.113.7"[..], Some("203.0.113.7")),
            (b"  203.0.113.7\t", Some("203.0.113.7")),
            (b"203.0.113.7:80", Some("203.0.113.7")),
            (b"[2001:db8::1]:443", Some("2001:db8::1")),
            (b"[::ffff:203.0.113.7]", Some("203.0.113.7")),
            (b"", None),
            (b"   ", None),
            (b"unknown", None),
            (b"unix:", None),
            (b"203.0.113.7\xff", None),
            (b"\xc3\xa9", None),
            (b"[2001:db8::1", None),
            (b"203.0.113.7:99999", None),
        ] {
            assert_eq!(
                parse_forwarded_address(entry),
                expected.map(ip),
                "{:?}",
                String::from_utf8_lossy(entry)
            );
        }
    }

    #[test]
    fn a_private_peer_sending_x_forwarded_for_to_a_relay_that_trusts_no_proxy_is_noted_once() {
        let warned = AtomicBool::new(false);
        let headers = forwarded(&["203.0.113.7"]);
        // Not from a public peer, nor without the header: that is not a proxy in front.
        assert!(!warn_once_about_an_unlisted_proxy(&warned, ip("203.0.113.9"), &headers));
        assert!(!warn_once_about_an_unlisted_proxy(&warned, ip("10.0.0.1"), &HeaderMap::new()));
        assert!(warn_once_about_an_unlisted_proxy(&warned, ip("10.0.0.1"), &headers));
        // Once per process, not once per request.
        for peer in ["10.0.0.1", "127.0.0.1", "192.168.1.1"] {
            assert!(!warn_once_about_an_unlisted_proxy(&warned, ip(peer), &headers), "{peer}");
        }
        assert!(UNLISTED_PROXY_WARNING.contains("server.trusted_proxies"));
    }

    #[test]
    fn loopback_and_private_addresses_are_where_a_proxy_is_expected() {
        for address in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.0.1",
            "169.254.1.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_loopback_or_private(ip(address)), "{address}");
        }
        for address in ["203.0.113.7", "8.8.8.8", "2001:db8::1", "100.64.0.1"] {
            assert!(!is_loopback_or_private(ip(address)), "{address}");
        }
    }

    #[test]
    fn empty_entries_are_skipped() {
        let headers = forwarded(&["203.0.113.7,, 10.1.2.3 ,", ""]);
        let client = client_ip(ip("10.0.0.1"), &headers, &proxies(&["10.0.0.0/8"]));
        assert_eq!(client, ip("203.0.113.7"));
    }

    #[test]
    fn entries_with_ports_and_brackets_are_understood() {
        let trusted = proxies(&["10.0.0.0/8"]);
        for (entry, expected) in [
            ("203.0.113.7:4711", "203.0.113.7"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("2001:db8::1", "2001:db8::1"),
        ] {
            let headers = forwarded(&[entry]);
            assert_eq!(client_ip(ip("10.0.0.1"), &headers, &trusted), ip(expected), "{entry}");
        }
    }

    #[test]
    fn ipv6_proxies_and_clients_are_handled() {
        let trusted = proxies(&["::1", "fd00::/8"]);
        let headers = forwarded(&["2001:db8::7, fd00::2"]);
        assert_eq!(client_ip(ip("::1"), &headers, &trusted), ip("2001:db8::7"));
        assert_eq!(client_ip(ip("::2"), &headers, &trusted), ip("::2"));
    }

    #[test]
    fn ipv4_mapped_addresses_are_compared_and_returned_as_ipv4() {
        let trusted = proxies(&["127.0.0.1"]);
        let headers = forwarded(&["::ffff:203.0.113.7"]);
        assert_eq!(client_ip(ip("::ffff:127.0.0.1"), &headers, &trusted), ip("203.0.113.7"));
        // An untrusted mapped peer comes back in its IPv4 form too.
        assert_eq!(client_ip(ip("::ffff:198.51.100.1"), &headers, &trusted), ip("198.51.100.1"));
    }

    // --- TrustedProxy -----------------------------------------------------------------------

    #[test]
    fn trusted_proxies_parse_networks_and_bare_addresses() {
        for (input, shown) in [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("127.0.0.1", "127.0.0.1/32"),
            (" 127.0.0.1/32 ", "127.0.0.1/32"),
            ("::1", "::1/128"),
            ("fd00::/8", "fd00::/8"),
            ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
        ] {
            let proxy: TrustedProxy = input.parse().unwrap();
            assert_eq!(proxy.to_string(), shown, "{input}");
        }
        let single: TrustedProxy = "127.0.0.1".parse().unwrap();
        assert!(single.contains(ip("127.0.0.1")));
        assert!(!single.contains(ip("127.0.0.2")));
    }

    #[test]
    fn trusted_proxies_refuse_what_is_not_a_network() {
        for input in
            ["", "localhost", "10.0.0.0/33", "10.0.0/8", "::1/129", "10.0.0.0/", "fe80::1%eth0"]
        {
            assert_eq!(
                input.parse::<TrustedProxy>(),
                Err(TrustedProxyError::Invalid { input: input.to_owned() }),
                "{input}"
            );
        }
        let error = "10.0.0.1/8".parse::<TrustedProxy>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "`10.0.0.1/8` has address bits set past its prefix; write the network as 10.0.0.0/8"
        );
        for input in ["0.0.0.0/0", "::/0", "::ffff:0.0.0.0/96"] {
            assert_eq!(
                input.parse::<TrustedProxy>(),
                Err(TrustedProxyError::TrustsEverything { input: input.to_owned() }),
                "{input}"
            );
        }
    }

    #[test]
    fn trusted_proxies_deserialize_from_strings_with_the_parse_error() {
        let parsed: Vec<TrustedProxy> =
            serde_json::from_value(json!(["10.0.0.0/8", "::1"])).unwrap();
        assert_eq!(serde_json::to_value(&parsed).unwrap(), json!(["10.0.0.0/8", "::1/128"]));
        let error = serde_json::from_value::<TrustedProxy>(json!("nope")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "`nope` is not an IP address or a CIDR network such as 10.0.0.0/8 or ::1/128"
        );
    }
}
