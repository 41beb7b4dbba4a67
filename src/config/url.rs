//! [`ServerUrl`]: the server's base URL, parsed and normalised once, here, from what the user
//! wrote; the rest of the program reads its parts and does not parse the text again.
//!
//! Owns: the accepted shape (`http` or `https`, written out; a host; an optional port and
//! path; no user name, password, query or fragment), the normalisation the Immich mobile app
//! applies (trailing `/` and one trailing `/api` removed, default port dropped, scheme and
//! host lower-cased), and which hosts are on a network the user controls. Must not: touch
//! the network (finding the API root under the base is api's job), or decide policy:
//! whether plain `http://` to a host is allowed is decided at connect time, with
//! `server.allow_insecure_http`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use reqwest::Url;

/// The scheme of a [`ServerUrl`]: one of the two the server can speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A server's base URL: `scheme://host[:port][/path]`, with no trailing `/`, no `/api`, no
/// query, no fragment and no user info. Made only by [`ServerUrl::parse`].
#[derive(Clone, PartialEq, Eq)]
pub struct ServerUrl {
    /// The normalised base; its path has no trailing `/` (other than the root's own).
    url: Url,
    /// `url` as text without the trailing `/`, ready for `format!("{text}/api")`.
    text: String,
    scheme: Scheme,
    /// What the user wrote, trimmed (it cannot hold a password: that is refused).
    written: String,
}

/// Why a server URL was refused. Each message is the part after `server.url: ` and never
/// repeats a user name or password. There is no `source()`: the reason is in the message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    #[error("is empty; set it to the server's base URL, e.g. https://photos.example.com")]
    Empty,
    #[error("{shown:?} must not contain spaces")]
    Spaces {
        /// The URL with any user info replaced by `***`.
        shown: String,
    },
    /// No `http://` or `https://`: which one the server speaks cannot be guessed (a wrong
    /// guess either fails later with a confusing TLS error or sends the key in the clear).
    #[error(
        "{written:?} has no scheme; write http://{written} or https://{written}, whichever \
         the server answers on"
    )]
    NoScheme { written: String },
    /// `https:photos` or `http:/photos`.
    #[error("{written:?}: write the scheme with two slashes, as {scheme}://")]
    SchemeSlashes {
        written: String,
        scheme: &'static str,
    },
    #[error("unsupported scheme `{scheme}`; use https:// or http://")]
    UnsupportedScheme { scheme: String },
    #[error("must not contain a query (?…) or fragment (#…); give the server's base URL")]
    QueryOrFragment,
    #[error(
        "must not contain a user name or password; use api_key_file, or email and \
         password_file"
    )]
    UserInfo,
    #[error("has an unclosed [ in its IPv6 address")]
    UnclosedBracket,
    #[error("has {after:?} after the IPv6 address")]
    AfterIpv6 { after: String },
    #[error("has no host name; e.g. https://photos.example.com")]
    NoHost,
    #[error("host {host:?} contains {bad:?}")]
    HostCharacter { host: String, bad: char },
    #[error("port {port:?} must be a number from 1 to 65535")]
    Port { port: String },
    /// What the URL parser refused that the checks above let through (e.g. `999.1.2.3`).
    #[error("{written:?} is not a valid URL: {reason}")]
    Malformed { written: String, reason: String },
}

impl ServerUrl {
    /// Checks and normalises a server URL as the user wrote it (surrounding spaces are
    /// ignored): `HTTPS://Photos.example.com:443/immich/api/` becomes
    /// `https://photos.example.com/immich`.
    pub fn parse(input: &str) -> Result<ServerUrl, UrlError> {
        let written = input.trim();
        if written.is_empty() {
            return Err(UrlError::Empty);
        }
        if written.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(UrlError::Spaces {
                shown: hide_user_info(written),
            });
        }
        let (scheme, rest) = match written.find("://") {
            Some(i) => {
                let scheme = match written[..i].to_ascii_lowercase().as_str() {
                    "http" => Scheme::Http,
                    "https" => Scheme::Https,
                    other => {
                        return Err(UrlError::UnsupportedScheme {
                            scheme: other.to_owned(),
                        })
                    }
                };
                (Some(scheme), &written[i + 3..])
            }
            None => {
                // Checked before the shape: `https:photos` would otherwise be reported as
                // host `https` with the port `photos`.
                let lower = written.to_ascii_lowercase();
                if let Some(scheme) = ["https", "http"]
                    .into_iter()
                    .find(|s| lower.strip_prefix(s).is_some_and(|r| r.starts_with(':')))
                {
                    return Err(UrlError::SchemeSlashes {
                        written: written.to_owned(),
                        scheme,
                    });
                }
                (None, written)
            }
        };
        // The shape first, so that `photos:99999` is told about its port and `me:pw@photos`
        // about its password (without echoing it) before the missing scheme.
        check_shape(rest)?;
        let Some(scheme) = scheme else {
            return Err(UrlError::NoScheme {
                written: written.to_owned(),
            });
        };
        let mut url = Url::parse(written).map_err(|e| UrlError::Malformed {
            written: written.to_owned(),
            reason: e.to_string(),
        })?;
        if url.host_str().unwrap_or("").is_empty() {
            return Err(UrlError::NoHost);
        }
        let mut path = url.path().trim_end_matches('/').to_owned();
        if path.ends_with("/api") {
            path.truncate(path.len() - "/api".len());
            path = path.trim_end_matches('/').to_owned();
        }
        url.set_path(&path);
        let text = url.as_str().trim_end_matches('/').to_owned();
        Ok(ServerUrl {
            url,
            text,
            scheme,
            written: written.to_owned(),
        })
    }

    /// The normalised base URL as text, without a trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The normalised base URL, parsed.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// `{base}{suffix}`; `suffix` starts with `/` (e.g. `/api`, `/.well-known/immich`).
    pub fn join(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.text)
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::Https
    }

    /// The host as in the URL: lower-cased, an IPv6 address in brackets (`[::1]`).
    pub fn host(&self) -> &str {
        self.url.host_str().unwrap_or("")
    }

    /// The port, the scheme's default (80, 443) when none is written.
    pub fn port(&self) -> u16 {
        self.url
            .port_or_known_default()
            .unwrap_or(match self.scheme {
                Scheme::Http => 80,
                Scheme::Https => 443,
            })
    }

    /// Whether the host is this machine: `127.0.0.0/8`, `::1` (also IPv4-mapped),
    /// `localhost` and `*.localhost`.
    pub fn is_loopback(&self) -> bool {
        match host_ip(self.host()) {
            Some(IpAddr::V4(v4)) => v4.is_loopback(),
            Some(IpAddr::V6(v6)) => {
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
            None => is_localhost_name(self.host()),
        }
    }

    /// Whether traffic to the host stays on a network the user controls, where plain
    /// `http://` needs no `allow_insecure_http`: loopback, private (RFC 1918, RFC 4193),
    /// link-local, CGNAT/Tailscale (`100.64.0.0/10`), `localhost` and mDNS `.local` names.
    pub fn is_local(&self) -> bool {
        is_local_host(self.host())
    }

    /// The URL as the user wrote it (trimmed), for messages that quote the config.
    pub fn as_written(&self) -> &str {
        &self.written
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerUrl({:?})", self.text)
    }
}

/// The authority and path after the scheme (or the whole text when there is none): no query
/// or fragment, no user info, a host, and a port in range.
fn check_shape(rest: &str) -> Result<(), UrlError> {
    if rest.contains(['?', '#']) {
        return Err(UrlError::QueryOrFragment);
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(UrlError::UserInfo);
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let Some((host, after)) = v6.split_once(']') else {
                return Err(UrlError::UnclosedBracket);
            };
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => {
                        return Err(UrlError::AfterIpv6 {
                            after: after.to_owned(),
                        })
                    }
                },
            }
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err(UrlError::NoHost);
    }
    if let Some(bad) = host
        .chars()
        .find(|&c| !(c.is_alphanumeric() || matches!(c, '-' | '.' | '_' | ':')))
    {
        return Err(UrlError::HostCharacter {
            host: host.to_owned(),
            bad,
        });
    }
    if let Some(port) = port {
        if !port.parse::<u16>().is_ok_and(|p| p != 0) {
            return Err(UrlError::Port {
                port: port.to_owned(),
            });
        }
    }
    Ok(())
}

/// `url` with the user name and password (if any) replaced by `***`.
fn hide_user_info(url: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &rest[at..]),
        None => url.to_owned(),
    }
}

/// The host as an IP address, without IPv6 brackets, if it is one.
fn host_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

fn is_localhost_name(host: &str) -> bool {
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

fn is_local_host(host: &str) -> bool {
    match host_ip(host) {
        Some(ip) => is_local_ip(ip),
        None => {
            is_localhost_name(host)
                || host
                    .trim_end_matches('.')
                    .to_ascii_lowercase()
                    .ends_with(".local")
        }
    }
}

fn is_local_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_local_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_local_v4(v4);
            }
            let first = v6.segments()[0];
            v6 == Ipv6Addr::LOCALHOST
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        }
    }
}

fn is_local_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        ServerUrl::parse(s)
            .map(|u| u.as_str().to_owned())
            .unwrap_or_else(|e| format!("ERR {e}"))
    }

    fn url(s: &str) -> ServerUrl {
        ServerUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// The normalisation api applied at connect time (`api::endpoint::normalise`), now done
    /// once here.
    #[test]
    fn normalisation_follows_the_mobile_app() {
        assert_eq!(
            n("  https://photos.example.com/  "),
            "https://photos.example.com"
        );
        assert_eq!(
            n("https://photos.example.com/api"),
            "https://photos.example.com"
        );
        assert_eq!(
            n("https://photos.example.com/api/"),
            "https://photos.example.com"
        );
        assert_eq!(n("http://192.168.1.5:2283/api"), "http://192.168.1.5:2283");
        assert_eq!(n("http://nas.local:2283//"), "http://nas.local:2283");
        assert_eq!(
            n("https://example.com/immich/api"),
            "https://example.com/immich"
        );
        assert_eq!(n("https://example.com/apix"), "https://example.com/apix");
        assert_eq!(n("https://example.com/api/api"), "https://example.com/api");
        assert_eq!(n("https://example.com:443/"), "https://example.com");
        assert_eq!(n("HTTPS://Example.COM"), "https://example.com");
        assert_eq!(n("http://[::1]:2283/"), "http://[::1]:2283");
        assert_eq!(
            url("https://example.com/immich").join("/api"),
            "https://example.com/immich/api"
        );
        assert_eq!(url("https://example.com/immich").url().path(), "/immich");
        assert_eq!(url(" http://x.org/api ").as_written(), "http://x.org/api");
    }

    /// Issue 13 §5: `127.0.0.1:2284` used to pass the config check and be taken as https.
    #[test]
    fn a_url_without_a_scheme_is_refused_with_both_choices() {
        let e = n("127.0.0.1:2284");
        assert!(e.contains("\"127.0.0.1:2284\" has no scheme"), "{e}");
        assert!(
            e.contains("http://127.0.0.1:2284 or https://127.0.0.1:2284"),
            "{e}"
        );
        assert!(n("photos.example.com").contains("has no scheme"));
        assert!(n("[::1]:2283").contains("has no scheme"));
        let e = n("https:photos.example.com");
        assert!(e.contains("two slashes, as https://"), "{e}");
        assert!(n("HTTP:/photos").contains("as http://"));
    }

    #[test]
    fn parts() {
        let u = url("https://Photos.Example.com/immich/");
        assert_eq!(u.scheme(), Scheme::Https);
        assert!(u.is_https());
        assert_eq!(u.host(), "photos.example.com");
        assert_eq!(u.port(), 443);
        assert!(!u.is_loopback() && !u.is_local());
        let u = url("http://127.0.0.1:2283");
        assert_eq!((u.scheme().as_str(), u.port()), ("http", 2283));
        assert!(u.is_loopback() && u.is_local());
        let u = url("http://[::1]:8080/");
        assert_eq!(u.host(), "[::1]");
        assert!(u.is_loopback());
        assert!(url("http://immich.localhost").is_loopback());
        assert!(!url("http://192.168.1.5").is_loopback());
        assert!(url("http://192.168.1.5").is_local());
        assert_eq!(url("http://x.org").port(), 80);
        assert_eq!(url("http://x.org").to_string(), "http://x.org");
    }

    #[test]
    fn errors_are_explained_without_secrets() {
        assert!(n("").contains("is empty"));
        assert!(n("   ").contains("is empty"));
        assert!(n("ftp://example.com").contains("unsupported scheme `ftp`"));
        let e = n("https://bob:hunter22@example.com/");
        assert!(e.contains("user name or password"), "{e}");
        assert!(!e.contains("hunter22"), "{e}");
        let e = n("https://bob:hunter22@exa mple.com/");
        assert!(e.contains("must not contain spaces"), "{e}");
        assert!(!e.contains("hunter22"), "{e}");
        let e = n("bob:hunter22@example.com");
        assert!(e.contains("user name or password"), "{e}");
        assert!(!e.contains("hunter22"), "{e}");
        assert!(n("http://").contains("has no host name"));
        assert!(n("https://999.1.2.3").contains("is not a valid URL"));
    }

    #[test]
    fn local_hosts_may_use_plain_http() {
        for h in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.5",
            "169.254.3.4",
            "100.101.102.103",
            "[::1]",
            "[fd12:3456::1]",
            "[fe80::1]",
            "[::ffff:192.168.1.5]",
            "localhost",
            "LOCALHOST",
            "immich.localhost",
            "nas.local",
            "nas.local.",
        ] {
            assert!(url(&format!("http://{h}")).is_local(), "{h}");
        }
        for h in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "[2001:db8::1]",
            "[::ffff:8.8.8.8]",
            "photos.example.com",
            "local",
            "nas.localdomain",
            "evil-local",
        ] {
            assert!(!url(&format!("http://{h}")).is_local(), "{h}");
        }
    }
}
