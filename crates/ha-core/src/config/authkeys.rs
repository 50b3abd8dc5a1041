//! heartbeat's `authkeys`: `auth N` picks the signing key; `N crc`, `N md5 SECRET`,
//! `N sha1 SECRET` define keys (several allow rotation). heartbeat refuses to start unless the
//! file is mode 600; so does [`check_mode`].

use super::locate::{Source, config_error};
use super::validate::MIN_SECRET_LEN;
use crate::error::Result;
use crate::model::{AuthAlgorithm, AuthKey, AuthSpec};
use std::path::Path;

/// Splits off the first whitespace-delimited word.
fn split_word(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    Some((&s[..end], s[end..].trim()))
}

/// Parses authkeys text.
pub(crate) fn parse(src: &Source<'_>) -> Result<AuthSpec> {
    let mut active: Option<(u8, usize)> = None;
    let mut keys: Vec<(AuthKey, usize)> = Vec::new();
    for (idx, raw) in src.text.lines().enumerate() {
        let line = idx + 1;
        let content = raw.trim();
        // Only whole-line comments: `#` may occur inside a secret.
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let Some((first, rest)) = split_word(content) else {
            continue;
        };
        let parse_id = |text: &str, field: &str| -> Result<u8> {
            text.parse::<u8>().map_err(|_| {
                config_error(
                    src.path,
                    line,
                    field,
                    format!("`{text}` is not a key number (0-255); write e.g. `1 sha1 SECRET`"),
                )
            })
        };
        if first.eq_ignore_ascii_case("auth") {
            let Some((n, extra)) = split_word(rest) else {
                return Err(config_error(
                    src.path,
                    line,
                    "auth",
                    "`auth` needs the number of the key to sign with, e.g. `auth 1`",
                ));
            };
            if !extra.is_empty() {
                return Err(config_error(
                    src.path,
                    line,
                    "auth",
                    "`auth` takes one key number; write `auth 1`",
                ));
            }
            if let Some((_, prev)) = active {
                return Err(config_error(
                    src.path,
                    line,
                    "auth",
                    format!("`auth` is already given on line {prev}; keep one"),
                ));
            }
            active = Some((parse_id(n, "auth")?, line));
            continue;
        }
        let id = parse_id(first, "key")?;
        let Some((method, secret)) = split_word(rest) else {
            return Err(config_error(
                src.path,
                line,
                first,
                "missing method; write `N sha1 SECRET`",
            ));
        };
        let field = method.to_ascii_lowercase();
        let algorithm = match field.as_str() {
            "crc" => AuthAlgorithm::Crc,
            "md5" => AuthAlgorithm::HmacMd5,
            "sha1" => AuthAlgorithm::HmacSha1,
            other => {
                return Err(config_error(
                    src.path,
                    line,
                    other,
                    format!(
                        "unknown method `{method}`; use sha1 (or md5; crc authenticates nothing)"
                    ),
                ));
            }
        };
        let secret = match algorithm {
            AuthAlgorithm::Crc if !secret.is_empty() => {
                return Err(config_error(
                    src.path,
                    line,
                    field,
                    "crc takes no secret; write `N crc` or use sha1",
                ));
            }
            AuthAlgorithm::Crc => Vec::new(),
            _ if secret.is_empty() => {
                return Err(config_error(
                    src.path,
                    line,
                    field,
                    format!("{method} needs a secret; write `{id} {method} SECRET`"),
                ));
            }
            _ => {
                if secret.len() < MIN_SECRET_LEN {
                    tracing::warn!(file = %src.path.display(), line, "authkeys secret {id} is only {} bytes; use at least {MIN_SECRET_LEN}", secret.len());
                }
                secret.as_bytes().to_vec()
            }
        };
        if let Some((_, prev)) = keys.iter().find(|(k, _)| k.id == id) {
            return Err(config_error(
                src.path,
                line,
                "key",
                format!("key {id} is already defined on line {prev}; number keys uniquely"),
            ));
        }
        keys.push((
            AuthKey {
                id,
                algorithm,
                secret,
            },
            line,
        ));
    }
    let Some((active, auth_line)) = active else {
        return Err(config_error(
            src.path,
            0,
            "auth",
            "no `auth N` line; add one naming the key to sign with, e.g. `auth 1`",
        ));
    };
    let Some((key, _)) = keys.iter().find(|(k, _)| k.id == active) else {
        return Err(config_error(
            src.path,
            auth_line,
            "auth",
            format!("`auth {active}` names an undefined key; add `{active} sha1 SECRET`"),
        ));
    };
    // Choosing crc in authkeys is heartbeat's way of opting out of authentication.
    let insecure = key.algorithm == AuthAlgorithm::Crc;
    if insecure {
        tracing::warn!(file = %src.path.display(), "authkeys selects crc: cluster traffic is NOT authenticated; switch to `{active} sha1 SECRET`");
    }
    Ok(AuthSpec {
        active: Some(active),
        keys: keys.into_iter().map(|(k, _)| k).collect(),
        insecure_no_auth: insecure,
    })
}

/// Refuses an authkeys file readable or writable by group or others, like heartbeat.
#[cfg(unix)]
pub(crate) fn check_mode(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| crate::error::Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(config_error(
            path,
            0,
            "mode",
            format!(
                "authkeys has mode {mode:04o} but must not be accessible by group or others; run `chmod 600 {}`",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// No permission bits to check off Unix.
#[cfg(not(unix))]
pub(crate) fn check_mode(_path: &Path) -> Result<()> {
    Ok(())
}
