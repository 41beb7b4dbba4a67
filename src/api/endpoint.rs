//! The server address: normalising what the user typed (API.md §1), the plain-`http://`
//! policy, joining API paths, and the WebSocket URL (API.md §6).
//!
//! Pure functions only; discovery itself (which needs the network) is in `client`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use reqwest::Url;

/// A normalised base URL: `scheme://host[:port][/path]`, no trailing `/`, no `/api`, no
/// query, no user info.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BaseUrl {
    pub url: Url,
    /// `url` as text without the trailing slash, ready for `format!("{text}/api")`.
    pub text: String,
}

impl BaseUrl {
    /// `{base}{suffix}`; `suffix` starts with `/`.
    pub fn join(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.text)
    }

    pub fn host(&self) -> &str {
        self.url.host_str().unwrap_or("")
    }
}

/// Normalises a user-entered server URL: trim, default `https://`, drop query and fragment,
/// strip trailing `/` and one trailing `/api`. The error is a message for the user that
/// never repeats user info (it may hold a password).
pub(crate) fn normalise(input: &str) -> Result<BaseUrl, String> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(
            "server.url is empty: set it to the address of the Immich web page, e.g. \
                    https://photos.example.com"
                .to_owned(),
        );
    }
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("https://{trimmed}")
    };
    let shown = hide_user_info(&with_scheme);
    let mut url = Url::parse(&with_scheme)
        .map_err(|e| format!("server.url {shown:?} is not a valid URL: {e}"))?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(format!(
                "server.url {shown:?} has the scheme {other:?}: use https:// (or http:// on a \
                 local network)"
            ))
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "server.url {shown:?} contains a user name or password: remove it and put the \
             credentials in server.api_key (or api_key_file, or email + password_file)"
        ));
    }
    if url.host_str().unwrap_or("").is_empty() {
        return Err(format!("server.url {shown:?} has no host name"));
    }
    url.set_query(None);
    url.set_fragment(None);
    let mut path = url.path().trim_end_matches('/').to_owned();
    if path.ends_with("/api") {
        path.truncate(path.len() - "/api".len());
        path = path.trim_end_matches('/').to_owned();
    }
    url.set_path(&path);
    let text = url.as_str().trim_end_matches('/').to_owned();
    Ok(BaseUrl { url, text })
}

fn hide_user_info(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &rest[at..]),
        None => url.to_owned(),
    }
}

/// Whether plain `http://` to this host keeps traffic on a network the user controls:
/// loopback, private (RFC 1918, RFC 4193), link-local, CGNAT/Tailscale (100.64/10),
/// `localhost` and mDNS `.local` names.
pub(crate) fn is_local_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return is_local_ip(ip);
    }
    let name = bare.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost") || name.ends_with(".local")
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

/// The socket.io URL for an API root (API.md §6): `ws(s)://host[:port]{api path}/socket.io/`
/// with the Engine.IO v4 WebSocket query; the trailing slash matters.
pub(crate) fn ws_url(api_root: &Url) -> String {
    let scheme = if api_root.scheme() == "https" {
        "wss"
    } else {
        "ws"
    };
    let host = api_root.host_str().unwrap_or("");
    let port = api_root.port().map(|p| format!(":{p}")).unwrap_or_default();
    let path = api_root.path().trim_end_matches('/');
    format!("{scheme}://{host}{port}{path}/socket.io/?EIO=4&transport=websocket")
}

/// Resolves the `api.endpoint` of `/.well-known/immich` against the base (as a directory:
/// `/api` is absolute and gives `{origin}/api`; `api` gives `{base}/api`).
pub(crate) fn resolve_endpoint(base: &BaseUrl, endpoint: &str) -> Option<Url> {
    let dir = Url::parse(&format!("{}/", base.text)).ok()?;
    let mut url = dir.join(endpoint.trim()).ok()?;
    if url.scheme() != base.url.scheme() || url.host_str() != base.url.host_str() {
        // A well-known answer pointing elsewhere would send our credentials to another
        // host; follow it only on the same scheme and host.
        return None;
    }
    url.set_query(None);
    url.set_fragment(None);
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    Some(url)
}

/// A URL as text without the trailing `/` (for `format!("{root}/server/ping")`).
pub(crate) fn root_text(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        normalise(s)
            .map(|b| b.text)
            .unwrap_or_else(|e| format!("ERR {e}"))
    }

    #[test]
    fn normalisation_follows_the_mobile_app() {
        assert_eq!(n("photos.example.com"), "https://photos.example.com");
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
        assert_eq!(n("https://example.com/?x=1#frag"), "https://example.com");
        assert_eq!(n("HTTPS://Example.COM"), "https://example.com");
        assert_eq!(n("[::1]:2283"), "https://[::1]:2283");
        assert_eq!(n("127.0.0.1:2283"), "https://127.0.0.1:2283");
    }

    #[test]
    fn normalisation_errors_are_explained_without_secrets() {
        assert!(n("").contains("server.url is empty"));
        assert!(n("   ").contains("server.url is empty"));
        assert!(n("ftp://example.com").contains("scheme \"ftp\""));
        let e = n("https://bob:hunter22@example.com/");
        assert!(e.contains("user name or password"), "{e}");
        assert!(!e.contains("hunter22"), "{e}");
        let e = n("https://bob:hunter22@exa mple.com/");
        assert!(e.starts_with("ERR"), "{e}");
        assert!(!e.contains("hunter22"), "{e}");
        assert!(n("http://").starts_with("ERR"));
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
            assert!(is_local_host(h), "{h}");
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
            assert!(!is_local_host(h), "{h}");
        }
    }

    #[test]
    fn websocket_urls() {
        let u = Url::parse("https://photos.example.com/api").unwrap();
        assert_eq!(
            ws_url(&u),
            "wss://photos.example.com/api/socket.io/?EIO=4&transport=websocket"
        );
        let u = Url::parse("http://127.0.0.1:2283/api").unwrap();
        assert_eq!(
            ws_url(&u),
            "ws://127.0.0.1:2283/api/socket.io/?EIO=4&transport=websocket"
        );
        let u = Url::parse("http://[::1]:8080").unwrap();
        assert_eq!(
            ws_url(&u),
            "ws://[::1]:8080/socket.io/?EIO=4&transport=websocket"
        );
    }

    #[test]
    fn well_known_endpoints_resolve_against_the_base() {
        let base = normalise("https://example.com/immich").unwrap();
        let r = |e: &str| resolve_endpoint(&base, e).map(|u| root_text(&u));
        assert_eq!(r("/api").as_deref(), Some("https://example.com/api"));
        assert_eq!(r("api").as_deref(), Some("https://example.com/immich/api"));
        assert_eq!(r("/api/").as_deref(), Some("https://example.com/api"));
        assert_eq!(
            r("https://example.com/x/api").as_deref(),
            Some("https://example.com/x/api")
        );
        assert_eq!(r("https://evil.example.net/api"), None);
        assert_eq!(r("http://example.com/api"), None);
    }
}
