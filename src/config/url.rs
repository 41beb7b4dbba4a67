//! The server's URL, checked for shape.

/// The shape of a base URL; the connect code does the real parsing and discovery.
pub(super) fn check_url(url: &str) -> Result<(), String> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{url:?} must not contain spaces"));
    }
    let rest = match url.find("://") {
        Some(i) => {
            let scheme = url[..i].to_ascii_lowercase();
            if scheme != "http" && scheme != "https" {
                return Err(format!(
                    "unsupported scheme `{scheme}`; use https:// or http://"
                ));
            }
            &url[i + 3..]
        }
        None => url,
    };
    if rest.contains(['?', '#']) {
        return Err(
            "must not contain a query (?…) or fragment (#…); give the server's base URL".to_owned(),
        );
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(
            "must not contain a user name or password; use api_key_file, or email \
                    and password_file"
                .to_owned(),
        );
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let Some((host, after)) = v6.split_once(']') else {
                return Err("has an unclosed [ in its IPv6 address".to_owned());
            };
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(format!("has {after:?} after the IPv6 address")),
                },
            }
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err("has no host name; e.g. https://photos.example.com".to_owned());
    }
    if let Some(bad) = host
        .chars()
        .find(|&c| !(c.is_alphanumeric() || matches!(c, '-' | '.' | '_' | ':')))
    {
        return Err(format!("host {host:?} contains {bad:?}"));
    }
    if let Some(port) = port {
        if !port.parse::<u16>().is_ok_and(|p| p != 0) {
            return Err(format!("port {port:?} must be a number from 1 to 65535"));
        }
    }
    Ok(())
}
