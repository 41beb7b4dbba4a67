//! Addresses under the server's base URL: the well-known endpoint resolved against it and
//! the WebSocket URL (docs/SERVER-API.md#connecting). The base itself is parsed and normalised
//! once, in config ([`ServerUrl`]).
//!
//! Pure functions only; discovery itself (which needs the network) is in `discovery`.

use reqwest::Url;

use crate::config::ServerUrl;

/// The socket.io URL for an API root (docs/SERVER-API.md#connecting):
/// `ws(s)://host[:port]{api path}/socket.io/` with the Engine.IO v4 WebSocket query; the
/// trailing slash matters.
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
pub(crate) fn resolve_endpoint(base: &ServerUrl, endpoint: &str) -> Option<Url> {
    let dir = Url::parse(&format!("{}/", base.as_str())).ok()?;
    let mut url = dir.join(endpoint.trim()).ok()?;
    if url.scheme() != base.url().scheme()
        || url.host_str() != base.url().host_str()
        || url.port_or_known_default() != base.url().port_or_known_default()
    {
        // A well-known answer pointing elsewhere would send our credentials to another
        // server; follow it only on the same origin (scheme, host and port: another port
        // is another server, found by the fuzz tests).
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
        let base = ServerUrl::parse("https://example.com/immich").unwrap();
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
