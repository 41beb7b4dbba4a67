//! The log filter every command installs: the user's level or directives
//! (`[log] level`, `-v`), plus the caps that keep other crates' logs free of secrets
//! (docs/RELIABILITY.md#secrets-in-logs).
//!
//! The HTTP, TLS and WebSocket crates log through the `log` crate, which the subscriber
//! forwards (so `trace` shows their connection and handshake lines too). One of those lines
//! carries a credential: tungstenite's client handshake logs the whole upgrade request at
//! TRACE, headers and all, and the credential is a header (`x-api-key`, `Authorization`).
//! That module is capped at DEBUG whatever the user asks for.
//!
//! Owns: the caps. Must not: decide the level (that is config and the command line).

use tracing_subscriber::EnvFilter;

/// Directives appended after the user's: the most specific target wins in an `EnvFilter`,
/// so these hold against `trace` and `tungstenite=trace` alike.
pub const CAPS: &[&str] = &["tungstenite::handshake::client=debug"];

/// The filter for `level` (a level or `EnvFilter` directives; an invalid one falls back to
/// `info`), with [`CAPS`] applied.
pub fn env_filter(level: &str) -> EnvFilter {
    let base = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    CAPS.iter().fold(base, |f, cap| match cap.parse() {
        Ok(d) => f.add_directive(d),
        Err(_) => f,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caps_parse_and_survive_any_level() {
        for cap in CAPS {
            assert!(
                cap.parse::<tracing_subscriber::filter::Directive>().is_ok(),
                "{cap}"
            );
        }
        for level in [
            "trace",
            "tungstenite=trace",
            "info,tungstenite::handshake=trace",
            "bogus==",
        ] {
            let shown = env_filter(level).to_string();
            assert!(
                shown.contains("tungstenite::handshake::client=debug"),
                "{level}: {shown}"
            );
        }
    }
}
