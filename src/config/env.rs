//! The environment layer: `IMMISH_SYNC__SECTION__KEY=value` variables applied over the file,
//! one at a time, so that an error there names the variable.
//!
//! Owns: reading the process environment (as UTF-8 pairs, tests pass their own), the
//! variables' names and values, and which key each variable set. Must not: validate values
//! beyond what deserialising the merged table does (that is `resolve`), or read files.

use std::collections::BTreeMap;

use super::locate::{explain, file_origin, Located, Origin};
use super::raw::RawConfig;
use super::{ConfigError, ENV_PREFIX};

/// The process environment as UTF-8 pairs. `std::env::vars()` panics on a non-UTF-8
/// variable; such variables cannot be ours, so they are skipped.
pub(super) fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

pub(super) fn env_get<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    // The last one wins, like a shell assignment after an inherited value.
    env.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// One `IMMISH_SYNC__…` variable, understood.
#[derive(Debug)]
pub(super) struct EnvOverride {
    var: String,
    /// Lower-cased section (`upload`, `roots`).
    section: String,
    /// For `roots`: which one.
    index: Option<usize>,
    /// Lower-cased key within the section.
    key: String,
    value: String,
}

impl EnvOverride {
    fn key_name(&self) -> String {
        match self.index {
            Some(i) => format!("{}[{i}].{}", self.section, self.key),
            None => format!("{}.{}", self.section, self.key),
        }
    }

    fn error(&self, message: String) -> ConfigError {
        ConfigError::Invalid {
            origin: Origin::Env {
                var: self.var.clone(),
            },
            key: self.key_name(),
            message,
        }
    }
}

/// The `IMMISH_SYNC__*` variables in `env`, in the order they are applied: by section, root
/// index and key, so that `ROOTS__0__…` comes before `ROOTS__1__…` whatever the
/// environment's order.
pub(super) fn env_overrides(env: &[(String, String)]) -> Result<Vec<EnvOverride>, ConfigError> {
    let mut out = Vec::new();
    for (var, value) in env {
        let Some(rest) = var
            .get(..ENV_PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
            .map(|_| &var[ENV_PREFIX.len()..])
        else {
            continue;
        };
        let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        let malformed = |why: &str| ConfigError::Invalid {
            origin: Origin::Env { var: var.clone() },
            // `IMMISH_SYNC__` alone names nothing; say so rather than print an empty key.
            key: Some(parts.join("."))
                .filter(|k| !k.trim().is_empty())
                .unwrap_or_else(|| "(no section or key)".to_owned()),
            message: format!(
                "{why}; name overrides IMMISH_SYNC__SECTION__KEY, e.g. \
                 IMMISH_SYNC__UPLOAD__CONCURRENCY=8, or IMMISH_SYNC__ROOTS__0__PATH=/photos \
                 for a root"
            ),
        };
        if parts.iter().any(String::is_empty) {
            return Err(malformed("empty name part"));
        }
        let (section, index, key) = match parts.as_slice() {
            [list, index, key] if is_list(list) => match index.parse::<usize>() {
                Ok(i) => (list.clone(), Some(i), key.clone()),
                Err(_) => return Err(malformed("the index of a list entry must be a number")),
            },
            [list, _] if is_list(list) => {
                return Err(malformed(&format!(
                    "{list} is a list, so the variable needs an index"
                )))
            }
            [section, key] => (section.clone(), None, key.clone()),
            _ => return Err(malformed("expected a section and a key")),
        };
        out.push(EnvOverride {
            var: var.clone(),
            section,
            index,
            key,
            value: value.clone(),
        });
    }
    out.sort_by(|a, b| {
        (&a.section, a.index, &a.key, &a.var).cmp(&(&b.section, b.index, &b.key, &b.var))
    });
    Ok(out)
}

/// The sections written `[[…]]`, whose variables carry an index.
fn is_list(section: &str) -> bool {
    section == "roots" || section == "accounts"
}

/// A variable's value as TOML (`8`, `true`, `["*.tmp"]`, `"quoted"`), or else as the
/// string it is (`https://…`, `5m`).
fn env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .filter(|t| t.len() == 1)
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

/// Applies `overrides` onto the file's table one at a time, deserialising after each so that
/// an error names the variable that caused it. (The file alone has already deserialised into
/// `from_file`, so the first failure is the variable's fault.)
pub(super) fn apply_overrides(
    file: &Located<'_>,
    from_file: RawConfig,
    overrides: &[EnvOverride],
) -> Result<RawConfig, ConfigError> {
    let mut table: toml::Table = file.text.parse().map_err(|e: toml::de::Error| {
        // Unreachable in practice: the same text parsed a moment ago.
        ConfigError::Syntax {
            origin: file_origin(file.path, file.text, e.span()),
            message: e.message().to_owned(),
        }
    })?;
    let mut raw = from_file;
    for o in overrides {
        let value = env_value(&o.value);
        let attempt = set_override(&table, o, value.clone())?;
        (table, raw) = match attempt.clone().try_into::<RawConfig>() {
            Ok(parsed) => (attempt, parsed),
            Err(first) => {
                // `IMMISH_SYNC__SERVER__API_KEY=12345` is a string to the user even though
                // it parses as an integer: try the value as text before giving up, and
                // report the first error if that fails too.
                let retry = match value {
                    toml::Value::String(_) => None,
                    _ => Some(set_override(
                        &table,
                        o,
                        toml::Value::String(o.value.clone()),
                    )?),
                };
                match retry.and_then(|t| Some((t.clone(), t.try_into::<RawConfig>().ok()?))) {
                    Some(ok) => ok,
                    None => {
                        let key = o.key_name();
                        return Err(o.error(explain(&key, first.message(), Some(&o.var))));
                    }
                }
            }
        };
    }
    Ok(raw)
}

/// A copy of `table` with the override's key set to `value`.
fn set_override(
    table: &toml::Table,
    o: &EnvOverride,
    value: toml::Value,
) -> Result<toml::Table, ConfigError> {
    let mut table = table.clone();
    let section = table
        .entry(o.section.clone())
        .or_insert_with(|| match o.index {
            Some(_) => toml::Value::Array(Vec::new()),
            None => toml::Value::Table(toml::Table::new()),
        });
    let target = match (o.index, section) {
        (None, toml::Value::Table(t)) => t,
        (Some(i), toml::Value::Array(roots)) => {
            if i > roots.len() {
                let what = if o.section == "roots" {
                    "root(s)"
                } else {
                    "account(s)"
                };
                return Err(o.error(format!(
                    "there is no {} {i}: the file and earlier variables define {} \
                     {what}, so use an index from 0 to {}",
                    o.section.trim_end_matches('s'),
                    roots.len(),
                    roots.len()
                )));
            }
            if i == roots.len() {
                roots.push(toml::Value::Table(toml::Table::new()));
            }
            match &mut roots[i] {
                toml::Value::Table(t) => t,
                _ => return Err(o.error(format!("{0} must be written [[{0}]]", o.section))),
            }
        }
        _ => {
            return Err(o.error(format!(
                "[{}] has a different shape in the file; check the variable's name",
                o.section
            )))
        }
    };
    target.insert(o.key.clone(), value);
    Ok(table)
}

/// Which dotted key each override set, to name the variable in validation errors. A root
/// that only the environment defines (index `file_roots` or above) is claimed whole, so that
/// an error about any of its keys names the variable that created it.
pub(super) fn claimed_keys(
    overrides: &[EnvOverride],
    file_roots: usize,
) -> BTreeMap<String, String> {
    let mut env_keys = BTreeMap::new();
    for o in overrides {
        env_keys.insert(o.key_name(), o.var.clone());
        if let Some(i) = o.index.filter(|&i| i >= file_roots && o.section == "roots") {
            env_keys
                .entry(format!("roots[{i}]"))
                .or_insert(o.var.clone());
        }
    }
    env_keys
}
