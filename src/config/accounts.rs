//! `[[accounts]]` and the `account` key of a root: several users of the server on one agent
//! (docs/ARCHITECTURE.md#accounts).
//!
//! Owns: an account's name rules, its URL, TLS trust and timeouts (each default
//! `[server]`'s) and credentials (the same sources as `[server]`, through
//! [`secret::credentials`]), and that every root names an account that exists. Must not: decide where an account's state lives (the daemon does).

use std::collections::HashSet;

use super::locate::{key_name, Seg};
use super::raw::{RawAccount, RawDuration};
use super::resolve::Resolver;
use super::secret::{self, CredentialTable};
use super::url::ServerUrl;
use super::{
    AccountConfig, ConfigError, Credentials, RootConfig, ServerConfig,
    ACCOUNT_KEY_CREDENTIAL_PREFIX,
};

use Seg::{Index as I, Key as K};

/// The name `status` and `/metrics` give `[server]`'s account; no `[[accounts]]` may take it.
pub const DEFAULT_ACCOUNT: &str = "default";

impl Resolver<'_> {
    pub(super) fn accounts(
        &self,
        raw: &[RawAccount],
        server: &ServerConfig,
    ) -> Result<Vec<AccountConfig>, ConfigError> {
        let mut names = HashSet::new();
        let mut out = Vec::with_capacity(raw.len());
        for (i, a) in raw.iter().enumerate() {
            let name_key = [K("accounts"), I(i), K("name")];
            let name = a.name.as_deref().map(str::trim).unwrap_or_default();
            if name.is_empty() {
                return Err(self.invalid(
                    &name_key,
                    "missing; every [[accounts]] needs a name, e.g. name = \"ann\"",
                ));
            }
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(self.invalid(
                    &name_key,
                    format!(
                        "{name:?}: use only letters, digits, - and _ (it names a folder and \
                         a systemd credential)"
                    ),
                ));
            }
            if name == DEFAULT_ACCOUNT {
                return Err(self.invalid(
                    &name_key,
                    format!("{name:?} is the name of [server]'s account; choose another name"),
                ));
            }
            if !names.insert(name.to_owned()) {
                return Err(self.invalid(
                    &name_key,
                    format!("{name:?} is the name of an earlier account; names must differ"),
                ));
            }
            let url_key = [K("accounts"), I(i), K("url")];
            let url = match a.url.as_deref().map(str::trim) {
                None => server.url.clone(),
                Some(text) => {
                    ServerUrl::parse(text).map_err(|e| self.invalid(&url_key, e.to_string()))?
                }
            };
            let path = [K("accounts"), I(i)];
            let systemd = format!("{ACCOUNT_KEY_CREDENTIAL_PREFIX}{name}");
            let table = CredentialTable {
                path: &path,
                api_key: a.api_key.as_ref(),
                api_key_file: a.api_key_file.as_deref(),
                email: a.email.as_deref(),
                password: a.password.as_ref(),
                password_file: a.password_file.as_deref(),
                systemd_credential: Some(&systemd),
            };
            let credentials = secret::credentials(self, &table)?;
            out.push(AccountConfig {
                name: name.to_owned(),
                server: self.account_server(i, a, url, credentials, server)?,
            });
        }
        Ok(out)
    }

    /// The account's server settings: its URL and credentials, and its own TLS trust and
    /// timeouts, checked as `[server]`'s are, or `[server]`'s where the table has none.
    fn account_server(
        &self,
        i: usize,
        a: &RawAccount,
        url: ServerUrl,
        credentials: Credentials,
        server: &ServerConfig,
    ) -> Result<ServerConfig, ConfigError> {
        let key = |k| [K("accounts"), I(i), K(k)];
        let ca_file = match a.ca_file.as_deref() {
            None => server.ca_file.clone(),
            Some(f) => Some(self.ca_file(&key("ca_file"), f)?),
        };
        let timeout = |k, own: Option<RawDuration>, of_server| match own {
            None => Ok(of_server),
            Some(d) => self.nonzero(&key(k), d),
        };
        Ok(ServerConfig {
            table: key_name(&[K("accounts"), I(i)]),
            url,
            credentials,
            ca_file,
            allow_insecure_http: a.allow_insecure_http.unwrap_or(server.allow_insecure_http),
            connect_timeout: timeout("connect_timeout", a.connect_timeout, server.connect_timeout)?,
            stall_timeout: timeout("stall_timeout", a.stall_timeout, server.stall_timeout)?,
        })
    }

    /// A root's `account` must name one of `accounts`.
    pub(super) fn root_accounts(
        &self,
        roots: &[RootConfig],
        accounts: &[AccountConfig],
    ) -> Result<(), ConfigError> {
        for (i, r) in roots.iter().enumerate() {
            let Some(name) = &r.account else { continue };
            if !accounts.iter().any(|a| &a.name == name) {
                let known: Vec<&str> = accounts.iter().map(|a| a.name.as_str()).collect();
                let known = if known.is_empty() {
                    "there are no [[accounts]] tables".to_owned()
                } else {
                    format!("the accounts are {}", known.join(", "))
                };
                return Err(self.invalid(
                    &[K("roots"), I(i), K("account")],
                    format!(
                        "{name:?} is not the name of an [[accounts]] table ({known}); add \
                         one, or remove the key to use [server]'s account"
                    ),
                ));
            }
        }
        Ok(())
    }
}
