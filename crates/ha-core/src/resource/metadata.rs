//! OCF `meta-data`: the XML self-description of an agent, parsed minimally.
//!
//! Only what the toolkit uses is kept: the agent's name and version, its parameters (name,
//! required, unique, type, default, short description) and its actions (name, timeout,
//! interval, depth). The parser is a small hand-written tag scanner: it understands elements,
//! attributes (single or double quoted), the five predefined entities and character references,
//! and skips comments, processing instructions, CDATA and the DOCTYPE. It never panics on bad
//! input; it fails only when no `<resource-agent>` element is found or a tag is unterminated.

use crate::error::{Error, Result};
use std::fmt::Write as _;
use std::time::Duration;

/// An agent's meta-data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetaData {
    /// `name` attribute of `<resource-agent>`.
    pub name: String,
    /// Text of `<version>` (the agent's version), if any.
    pub version: Option<String>,
    /// The agent's `<shortdesc>`, if any.
    pub shortdesc: Option<String>,
    /// Parameters, in document order.
    pub parameters: Vec<ParameterMeta>,
    /// Actions, in document order.
    pub actions: Vec<ActionMeta>,
}

/// One `<parameter>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParameterMeta {
    /// Name; it arrives in the agent's environment as `OCF_RESKEY_<name>`.
    pub name: String,
    /// `required="1"`.
    pub required: bool,
    /// `unique="1"`: no two resources may share the value.
    pub unique: bool,
    /// `<content type=...>`, e.g. `string`, `integer`, `boolean`.
    pub content_type: Option<String>,
    /// `<content default=...>`.
    pub default: Option<String>,
    /// The parameter's `<shortdesc>`.
    pub shortdesc: Option<String>,
}

/// One `<action>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActionMeta {
    /// Action name, e.g. `start`, `monitor`, `meta-data`.
    pub name: String,
    /// Advised minimum timeout (unparseable values are dropped).
    pub timeout: Option<Duration>,
    /// Advised interval (monitor).
    pub interval: Option<Duration>,
    /// `depth` attribute (monitor).
    pub depth: Option<String>,
}

impl MetaData {
    /// Parse the output of an agent's `meta-data` action.
    pub fn parse(xml: &str) -> Result<MetaData> {
        parse(xml)
    }

    /// The action names, in document order.
    pub fn action_names(&self) -> Vec<&str> {
        self.actions.iter().map(|a| a.name.as_str()).collect()
    }

    /// The parameter names, in document order.
    pub fn parameter_names(&self) -> Vec<&str> {
        self.parameters.iter().map(|p| p.name.as_str()).collect()
    }

    /// Whether the agent advertises `action`.
    pub fn has_action(&self, action: &str) -> bool {
        self.actions.iter().any(|a| a.name == action)
    }

    /// The action named `name`.
    pub fn action(&self, name: &str) -> Option<&ActionMeta> {
        self.actions.iter().find(|a| a.name == name)
    }

    /// The parameter named `name`.
    pub fn parameter(&self, name: &str) -> Option<&ParameterMeta> {
        self.parameters.iter().find(|p| p.name == name)
    }

    /// Render as OCF meta-data XML (what [`MetaData::parse`] reads back).
    pub fn to_xml(&self) -> String {
        let mut s = String::from("<?xml version=\"1.0\"?>\n");
        s.push_str("<!DOCTYPE resource-agent SYSTEM \"ra-api-1.dtd\">\n");
        let _ = writeln!(s, "<resource-agent name=\"{}\">", escape(&self.name));
        if let Some(v) = &self.version {
            let _ = writeln!(s, "<version>{}</version>", escape(v));
        }
        if let Some(d) = &self.shortdesc {
            let _ = writeln!(s, "<shortdesc lang=\"en\">{}</shortdesc>", escape(d));
        }
        s.push_str("<parameters>\n");
        for p in &self.parameters {
            let _ = writeln!(
                s,
                "<parameter name=\"{}\" required=\"{}\" unique=\"{}\">",
                escape(&p.name),
                u8::from(p.required),
                u8::from(p.unique)
            );
            if let Some(d) = &p.shortdesc {
                let _ = writeln!(s, "<shortdesc lang=\"en\">{}</shortdesc>", escape(d));
            }
            if p.content_type.is_some() || p.default.is_some() {
                s.push_str("<content");
                if let Some(t) = &p.content_type {
                    let _ = write!(s, " type=\"{}\"", escape(t));
                }
                if let Some(d) = &p.default {
                    let _ = write!(s, " default=\"{}\"", escape(d));
                }
                s.push_str(" />\n");
            }
            s.push_str("</parameter>\n");
        }
        s.push_str("</parameters>\n<actions>\n");
        for a in &self.actions {
            let _ = write!(s, "<action name=\"{}\"", escape(&a.name));
            if let Some(t) = a.timeout {
                let _ = write!(s, " timeout=\"{}ms\"", t.as_millis());
            }
            if let Some(i) = a.interval {
                let _ = write!(s, " interval=\"{}ms\"", i.as_millis());
            }
            if let Some(d) = &a.depth {
                let _ = write!(s, " depth=\"{}\"", escape(d));
            }
            s.push_str(" />\n");
        }
        s.push_str("</actions>\n</resource-agent>\n");
        s
    }
}

/// Parse a Pacemaker-style duration: a number with an optional unit (`ms`, `msec`, `s`, `sec`,
/// `m`, `min`, `h`, `hr`; no unit means seconds), e.g. `20s`, `500ms`, `2min`, `30`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms_per = match unit.trim().to_ascii_lowercase().as_str() {
        "ms" | "msec" => 1,
        "" | "s" | "sec" => 1_000,
        "m" | "min" => 60_000,
        "h" | "hr" => 3_600_000,
        _ => return None,
    };
    Some(Duration::from_millis(n.checked_mul(ms_per)?))
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        // An entity is at most a few characters; an unknown or unterminated one stays literal.
        let decoded = rest.find(';').filter(|&semi| semi <= 12).and_then(|semi| {
            let ent = &rest[1..semi];
            let c = match ent {
                "lt" => Some('<'),
                "gt" => Some('>'),
                "amp" => Some('&'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => {
                    let num = ent.strip_prefix('#')?;
                    let code = match num.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => num.parse().ok()?,
                    };
                    char::from_u32(code)
                }
            }?;
            Some((c, semi + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A lexical item of the document.
#[derive(Debug)]
enum Token<'a> {
    Open {
        name: &'a str,
        attrs: Vec<(&'a str, String)>,
        self_closing: bool,
    },
    Close(&'a str),
    Text(&'a str),
}

fn malformed(message: impl Into<String>) -> Error {
    Error::Agent {
        agent: "meta-data".into(),
        message: message.into(),
    }
}

/// Split `xml` into tokens, skipping comments, PIs, CDATA and declarations.
fn tokenize(xml: &str) -> Result<Vec<Token<'_>>> {
    let mut tokens = Vec::new();
    let mut rest = xml;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            tokens.push(Token::Text(rest));
            break;
        };
        if lt > 0 {
            tokens.push(Token::Text(&rest[..lt]));
        }
        rest = &rest[lt..];
        let skip_to = |end: &str, what: &str| -> Result<usize> {
            rest.find(end)
                .map(|i| i + end.len())
                .ok_or_else(|| malformed(format!("unterminated {what}")))
        };
        if rest.starts_with("<!--") {
            rest = &rest[skip_to("-->", "comment")?..];
        } else if rest.starts_with("<![CDATA[") {
            let end = skip_to("]]>", "CDATA section")?;
            tokens.push(Token::Text(&rest[9..end - 3]));
            rest = &rest[end..];
        } else if rest.starts_with("<?") {
            rest = &rest[skip_to("?>", "processing instruction")?..];
        } else if rest.starts_with("<!") {
            rest = &rest[skip_to(">", "declaration")?..];
        } else {
            let end = tag_end(rest).ok_or_else(|| malformed("unterminated tag"))?;
            let inner = &rest[1..end];
            rest = &rest[end + 1..];
            tokens.push(parse_tag(inner)?);
        }
    }
    Ok(tokens)
}

/// Index of the `>` closing the tag at the start of `s`, honouring quoted attribute values.
fn tag_end(s: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices().skip(1) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '>') => return Some(i),
            (None, _) => {}
        }
    }
    None
}

fn parse_tag(inner: &str) -> Result<Token<'_>> {
    if let Some(name) = inner.strip_prefix('/') {
        return Ok(Token::Close(name.trim()));
    }
    let (body, self_closing) = match inner.strip_suffix('/') {
        Some(b) => (b, true),
        None => (inner, false),
    };
    let name_end = body.find(|c: char| c.is_whitespace()).unwrap_or(body.len());
    let name = &body[..name_end];
    if name.is_empty() {
        return Err(malformed("tag without a name"));
    }
    let mut attrs = Vec::new();
    let mut rest = body[name_end..].trim_start();
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .ok_or_else(|| malformed(format!("attribute without value in <{name}>")))?;
        let key = rest[..eq].trim();
        let after = rest[eq + 1..].trim_start();
        let quote = after
            .chars()
            .next()
            .filter(|c| *c == '"' || *c == '\'')
            .ok_or_else(|| malformed(format!("unquoted attribute {key} in <{name}>")))?;
        let close = after[1..]
            .find(quote)
            .ok_or_else(|| malformed(format!("unterminated attribute {key} in <{name}>")))?;
        attrs.push((key, unescape(&after[1..1 + close])));
        rest = after[close + 2..].trim_start();
    }
    Ok(Token::Open {
        name,
        attrs,
        self_closing,
    })
}

fn attr<'a>(attrs: &'a [(&str, String)], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.as_str())
}

fn truthy(v: Option<&str>) -> bool {
    matches!(v.map(str::trim), Some("1" | "true" | "yes"))
}

fn text_value(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// Parse meta-data XML; see the module documentation for what is understood.
pub(crate) fn parse(xml: &str) -> Result<MetaData> {
    let tokens = tokenize(xml)?;
    let mut md: Option<MetaData> = None;
    // Element names from the root down to the current element.
    let mut stack: Vec<&str> = Vec::new();
    // Text collected for the element being read (version, shortdesc).
    let mut text = String::new();
    for tok in tokens {
        match tok {
            Token::Open {
                name,
                attrs,
                self_closing,
            } => {
                let parent = stack.last().copied();
                match (name, parent) {
                    ("resource-agent", None) if md.is_none() => {
                        md = Some(MetaData {
                            name: attr(&attrs, "name").unwrap_or_default().to_owned(),
                            ..MetaData::default()
                        });
                    }
                    ("parameter", Some("parameters")) => {
                        if let Some(m) = md.as_mut() {
                            m.parameters.push(ParameterMeta {
                                name: attr(&attrs, "name").unwrap_or_default().to_owned(),
                                required: truthy(attr(&attrs, "required")),
                                unique: truthy(attr(&attrs, "unique")),
                                ..ParameterMeta::default()
                            });
                        }
                    }
                    ("content", Some("parameter")) => {
                        if let Some(p) = md.as_mut().and_then(|m| m.parameters.last_mut()) {
                            p.content_type = attr(&attrs, "type").map(str::to_owned);
                            p.default = attr(&attrs, "default").map(str::to_owned);
                        }
                    }
                    ("action", Some("actions")) => {
                        if let Some(m) = md.as_mut() {
                            m.actions.push(ActionMeta {
                                name: attr(&attrs, "name").unwrap_or_default().to_owned(),
                                timeout: attr(&attrs, "timeout").and_then(parse_duration),
                                interval: attr(&attrs, "interval").and_then(parse_duration),
                                depth: attr(&attrs, "depth").map(str::to_owned),
                            });
                        }
                    }
                    _ => {}
                }
                if !self_closing {
                    stack.push(name);
                    text.clear();
                }
            }
            Token::Text(t) => text.push_str(&unescape(t)),
            Token::Close(name) => {
                // Tolerate sloppy nesting: pop back to the matching element if there is one.
                let Some(pos) = stack.iter().rposition(|n| *n == name) else {
                    continue;
                };
                let parent = pos.checked_sub(1).map(|i| stack[i]);
                let grandparent = pos.checked_sub(2).map(|i| stack[i]);
                if let Some(m) = md.as_mut() {
                    match (name, parent, grandparent) {
                        ("version", Some("resource-agent"), None) => m.version = text_value(&text),
                        ("shortdesc", Some("resource-agent"), None) => {
                            m.shortdesc = text_value(&text)
                        }
                        ("shortdesc", Some("parameter"), _) => {
                            if let Some(p) = m.parameters.last_mut() {
                                p.shortdesc = text_value(&text);
                            }
                        }
                        _ => {}
                    }
                }
                stack.truncate(pos);
                text.clear();
            }
        }
    }
    md.ok_or_else(|| malformed("no <resource-agent> element in the output"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = r#"<?xml version="1.0"?>
<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">
<resource-agent name="Sample" version="1.0">
<version>1.1</version>
<!-- a comment with <parameter name="bogus"> inside -->
<longdesc lang="en">Long &amp; winding <![CDATA[ <not a tag> ]]></longdesc>
<shortdesc lang="en">Sample &lt;agent&gt;</shortdesc>
<parameters>
<parameter name="state" unique="1" required='1'>
<longdesc lang="en">Where</longdesc>
<shortdesc lang="en">State file</shortdesc>
<content type="string" default="/run/x > y" />
</parameter>
<parameter name="fake" unique="0">
<content type="string" default="dummy" />
</parameter>
</parameters>
<actions>
<action name="start"        timeout="20s" />
<action name="monitor"      timeout="20" interval="10s" depth="0" />
<action name="meta-data"    timeout="500ms" />
<action name="validate-all" timeout="bogus" />
</actions>
</resource-agent>
"#;

    #[test]
    fn parses_sample() {
        let md = MetaData::parse(SAMPLE).unwrap();
        assert_eq!(md.name, "Sample");
        assert_eq!(md.version.as_deref(), Some("1.1"));
        assert_eq!(md.shortdesc.as_deref(), Some("Sample <agent>"));
        assert_eq!(md.parameter_names(), ["state", "fake"]);
        let state = md.parameter("state").unwrap();
        assert!(state.required && state.unique);
        assert_eq!(state.default.as_deref(), Some("/run/x > y"));
        assert_eq!(state.shortdesc.as_deref(), Some("State file"));
        assert!(!md.parameter("fake").unwrap().unique);
        assert_eq!(
            md.action_names(),
            ["start", "monitor", "meta-data", "validate-all"]
        );
        let mon = md.action("monitor").unwrap();
        assert_eq!(mon.timeout, Some(Duration::from_secs(20)));
        assert_eq!(mon.interval, Some(Duration::from_secs(10)));
        assert_eq!(mon.depth.as_deref(), Some("0"));
        assert_eq!(
            md.action("meta-data").unwrap().timeout,
            Some(Duration::from_millis(500))
        );
        assert_eq!(md.action("validate-all").unwrap().timeout, None);
    }

    #[test]
    fn rejects_non_meta_data() {
        assert!(MetaData::parse("usage: foo {start|stop}").is_err());
        assert!(MetaData::parse("<resource-agent name=\"x\"").is_err());
        assert!(MetaData::parse("<resource-agent name=x>").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20s"), Some(Duration::from_secs(20)));
        assert_eq!(parse_duration("2min"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("15"), Some(Duration::from_secs(15)));
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("99999999999999999999h"), None);
    }

    fn text() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 <>&\"';#/=-]{0,12}"
    }

    fn opt_text() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(text())
    }

    fn param() -> impl Strategy<Value = ParameterMeta> {
        (
            text(),
            any::<bool>(),
            any::<bool>(),
            opt_text(),
            opt_text(),
            opt_text(),
        )
            .prop_map(
                |(name, required, unique, content_type, default, shortdesc)| ParameterMeta {
                    name,
                    required,
                    unique,
                    content_type,
                    default,
                    shortdesc,
                },
            )
    }

    fn action() -> impl Strategy<Value = ActionMeta> {
        let ms = proptest::option::of((0u64..10_000_000).prop_map(Duration::from_millis));
        (text(), ms.clone(), ms, opt_text()).prop_map(|(name, timeout, interval, depth)| {
            ActionMeta {
                name,
                timeout,
                interval,
                depth,
            }
        })
    }

    /// What survives a round trip: element text is trimmed and empty text means absent.
    fn normalized(mut md: MetaData) -> MetaData {
        let norm = |o: Option<String>| o.and_then(|s| text_value(&s));
        md.version = norm(md.version);
        md.shortdesc = norm(md.shortdesc);
        for p in &mut md.parameters {
            p.shortdesc = norm(p.shortdesc.take());
        }
        md
    }

    proptest! {
        #[test]
        fn round_trip(
            name in text(),
            version in opt_text(),
            shortdesc in opt_text(),
            parameters in proptest::collection::vec(param(), 0..5),
            actions in proptest::collection::vec(action(), 0..6),
        ) {
            let md = MetaData { name, version, shortdesc, parameters, actions };
            let back = MetaData::parse(&md.to_xml()).unwrap();
            prop_assert_eq!(back, normalized(md));
        }

        #[test]
        fn never_panics(s in "\\PC{0,200}") {
            let _ = MetaData::parse(&s);
        }

        #[test]
        fn never_panics_on_tag_soup(s in "[<>/=\"'!?\\[\\]a-z &;#-]{0,200}") {
            let _ = MetaData::parse(&s);
        }
    }
}
