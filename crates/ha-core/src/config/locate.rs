//! Turning byte offsets into `file:line: field` locations.
//!
//! `toml` reports byte spans; users want a line and the name of the setting. For parse and type
//! errors the field is recovered from the text around the span (the enclosing `[table]` header
//! and the `key =` of the line), so `[[node]]` + `bogus = 1` becomes `node.bogus`.

use crate::error::{Error, Location};
use std::ops::Range;
use std::path::Path;

/// A configuration text and the path used in its error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source<'a> {
    /// File name shown in errors.
    pub path: &'a Path,
    /// Full text.
    pub text: &'a str,
}

/// Builds a configuration error.
pub(crate) fn config_error(
    file: &Path,
    line: usize,
    field: impl Into<String>,
    message: impl Into<String>,
) -> Error {
    Error::Config {
        location: Location {
            file: file.to_path_buf(),
            line,
            field: field.into(),
        },
        message: message.into(),
    }
}

impl<'a> Source<'a> {
    /// 1-based line of a byte offset (offsets past the end count as the last line).
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        let prefix = self.text.get(..end).unwrap_or(self.text);
        prefix.bytes().filter(|b| *b == b'\n').count() + 1
    }

    /// An error at the start of `span`.
    pub fn error_at(
        &self,
        span: &Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Error {
        config_error(self.path, self.line_of(span.start), field, message)
    }

    /// An error about table `name` as a whole, at its `[name]` header (line 0 when the table
    /// has no header of its own, e.g. only `[[auth.key]]` is written).
    pub fn section_error(
        &self,
        name: &str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Error {
        let mut line = 0;
        for (idx, text) in self.text.lines().enumerate() {
            if header_name(text.trim()).as_deref() == Some(name) {
                line = idx + 1;
                break;
            }
        }
        config_error(self.path, line, field, message)
    }

    /// An error not tied to a place in the file (a missing section): line 0.
    pub fn error_nowhere(&self, field: impl Into<String>, message: impl Into<String>) -> Error {
        config_error(self.path, 0, field, message)
    }

    /// Converts a `toml` error, recovering line and field from its span. `syntax`: the text
    /// is not TOML at all (then only a key on the very line is trusted; a broken header line
    /// names itself).
    pub fn toml_error(&self, err: &toml::de::Error, syntax: bool) -> Error {
        let message = err.message().trim().replace('\n', "; ");
        let offset = err.span().map(|s| s.start).unwrap_or(0);
        let line = self.line_of(offset);
        if syntax {
            let text = self.text.lines().nth(line - 1).unwrap_or("").trim();
            let field = match key_of(text) {
                Some(key) => join(&self.field_at(offset).0, &key),
                None => text.chars().take(40).collect(),
            };
            return config_error(
                self.path,
                line,
                field,
                format!("invalid TOML: {message}; fix the syntax on this line"),
            );
        }
        // `missing field `x`` points at the table; name the missing key itself.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        // An empty span at 0 is the document itself: a whole top-level section is missing.
        if let (Some(name), Some(span)) = (missing, err.span())
            && span.is_empty()
            && span.start == 0
        {
            return config_error(
                self.path,
                0,
                name,
                format!("missing [{name}] section; add it"),
            );
        }
        let (table, key) = self.field_at(offset);
        let field = match (missing, key) {
            (Some(name), _) => join(&table, name),
            (None, Some(key)) => join(&table, &key),
            (None, None) => table,
        };
        let hint = hint_for(&message);
        config_error(self.path, line, field, format!("{message}{hint}"))
    }

    /// The enclosing table header and the key assigned on (or before) the line of `offset`.
    fn field_at(&self, offset: usize) -> (String, Option<String>) {
        let line_idx = self.line_of(offset) - 1;
        let lines: Vec<&str> = self.text.lines().collect();
        let mut key = None;
        for idx in (0..=line_idx.min(lines.len().saturating_sub(1))).rev() {
            let Some(raw) = lines.get(idx) else { break };
            let line = raw.trim();
            if let Some(header) = header_name(line) {
                return (header, key);
            }
            if key.is_none() {
                key = key_of(line);
            }
        }
        (String::new(), key)
    }
}

fn join(table: &str, key: &str) -> String {
    if table.is_empty() {
        key.to_owned()
    } else {
        format!("{table}.{key}")
    }
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | '"' | '\'')
}

fn clean_key(k: &str) -> String {
    k.split('.')
        .map(|part| part.trim().trim_matches(|c| c == '"' || c == '\''))
        .collect::<Vec<_>>()
        .join(".")
}

/// `[a.b]` or `[[a.b]]` -> `a.b`; anything else (including nested arrays) -> None.
fn header_name(line: &str) -> Option<String> {
    let line = line.split('#').next().unwrap_or("").trim();
    let inner = line
        .strip_prefix("[[")
        .and_then(|l| l.strip_suffix("]]"))
        .or_else(|| line.strip_prefix('[').and_then(|l| l.strip_suffix(']')))?;
    if inner.trim().is_empty() || !inner.chars().all(is_key_char) || inner.contains('"') {
        return None;
    }
    Some(clean_key(inner))
}

/// `key = value` -> `key`.
fn key_of(line: &str) -> Option<String> {
    let (k, _) = line.split_once('=')?;
    let k = k.trim();
    if k.is_empty() || !k.chars().all(is_key_char) {
        return None;
    }
    Some(clean_key(k))
}

/// A short fix-it for the common serde messages.
fn hint_for(message: &str) -> &'static str {
    if message.starts_with("unknown field") {
        "; remove it or fix its spelling"
    } else if message.starts_with("missing field") {
        "; add it"
    } else if message.starts_with("unknown variant") {
        "; use one of the listed values"
    } else if message.starts_with("invalid value") {
        "; use a value within the allowed range"
    } else if message.starts_with("invalid type") {
        "; change the value to the expected type"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_table_and_key() {
        let text = "a = 1\n[timing]\nkeepalive = \"x\"\n[[auth.key]]\nids = [\n  1,\n  2]\n";
        let src = Source {
            path: Path::new("f.toml"),
            text,
        };
        let at = |needle: &str| text.find(needle).unwrap();
        assert_eq!(src.line_of(at("keepalive")), 3);
        assert_eq!(src.field_at(at("a =")), (String::new(), Some("a".into())));
        assert_eq!(
            src.field_at(at("\"x\"")),
            ("timing".into(), Some("keepalive".into()))
        );
        assert_eq!(
            src.field_at(at("2]")),
            ("auth.key".into(), Some("ids".into()))
        );
        assert_eq!(src.field_at(at("[[auth")), ("auth.key".into(), None));
    }
}
