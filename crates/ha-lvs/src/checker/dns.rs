//! DNS check (keepalived `DNS_CHECK`, ldirectord `service = dns`): one query, one answer.
//!
//! The check sends one query (random 16-bit id, RD set, class IN) over UDP from a connected
//! socket (the kernel drops datagrams from any other source) to the endpoint, and waits for
//! the answer until the check's timeout. Datagrams that are not the answer (another id, not a
//! response, another question) are ignored, as keepalived does. A truncated (TC) answer is
//! asked again once over TCP (2-byte length prefix).
//!
//! Verdict, following keepalived's `check_dns.c`: up = RCODE NOERROR; any other RCODE
//! (NXDOMAIN included) is down. Beyond keepalived, the question must be echoed, and with
//! `expect` one answer record's data must contain that text (ldirectord `receive`): address
//! text of A/AAAA, target name of CNAME/NS/PTR/MX, TXT strings, SOA fields.
//!
//! The codec is the small subset a health check needs (header, question, answer records,
//! name compression), written here rather than pulled from a resolver crate: the whole
//! decoder is a few hundred lines, sans-IO, and fuzzed. Names are bounded (255 bytes) and
//! compression pointers must point backwards (so they cannot loop) with at most
//! [`MAX_POINTER_HOPS`] hops; malformed input is an error, never a panic.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

use super::ProbeOutcome;

/// Most compression pointers followed in one name.
pub const MAX_POINTER_HOPS: usize = 128;
/// Longest name on the wire (RFC 1035).
const MAX_NAME: usize = 255;
/// Class IN.
const CLASS_IN: u16 = 1;
/// Header flag bits.
const FLAG_QR: u16 = 0x8000;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;

/// Query type of a DNS check. Names parse case-insensitively (`a`, `AAAA`, `TYPE65`).
///
/// The default is SOA, keepalived's `DNS_DEFAULT_TYPE` (with the default name `.`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DnsType {
    /// IPv4 address (1).
    A,
    /// Name server (2).
    Ns,
    /// Canonical name (5).
    Cname,
    /// Start of authority (6).
    #[default]
    Soa,
    /// Reverse pointer (12).
    Ptr,
    /// Mail exchange (15).
    Mx,
    /// Text (16).
    Txt,
    /// IPv6 address (28).
    Aaaa,
    /// Any other type by number.
    Other(u16),
}

impl DnsType {
    /// The type's number on the wire.
    pub fn code(self) -> u16 {
        match self {
            DnsType::A => 1,
            DnsType::Ns => 2,
            DnsType::Cname => 5,
            DnsType::Soa => 6,
            DnsType::Ptr => 12,
            DnsType::Mx => 15,
            DnsType::Txt => 16,
            DnsType::Aaaa => 28,
            DnsType::Other(c) => c,
        }
    }

    /// The type of a wire number.
    pub fn from_code(code: u16) -> Self {
        match code {
            1 => DnsType::A,
            2 => DnsType::Ns,
            5 => DnsType::Cname,
            6 => DnsType::Soa,
            12 => DnsType::Ptr,
            15 => DnsType::Mx,
            16 => DnsType::Txt,
            28 => DnsType::Aaaa,
            c => DnsType::Other(c),
        }
    }
}

impl fmt::Display for DnsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsType::A => f.write_str("A"),
            DnsType::Ns => f.write_str("NS"),
            DnsType::Cname => f.write_str("CNAME"),
            DnsType::Soa => f.write_str("SOA"),
            DnsType::Ptr => f.write_str("PTR"),
            DnsType::Mx => f.write_str("MX"),
            DnsType::Txt => f.write_str("TXT"),
            DnsType::Aaaa => f.write_str("AAAA"),
            DnsType::Other(c) => write!(f, "TYPE{c}"),
        }
    }
}

impl FromStr for DnsType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let u = s.to_ascii_uppercase();
        Ok(match u.as_str() {
            "A" => DnsType::A,
            "NS" => DnsType::Ns,
            "CNAME" => DnsType::Cname,
            "SOA" => DnsType::Soa,
            "PTR" => DnsType::Ptr,
            "MX" => DnsType::Mx,
            "TXT" => DnsType::Txt,
            "AAAA" => DnsType::Aaaa,
            _ => match u.strip_prefix("TYPE").and_then(|n| n.parse::<u16>().ok()) {
                Some(c) => DnsType::from_code(c),
                None => {
                    return Err(format!(
                        "unknown DNS type {s:?} (A, NS, CNAME, SOA, PTR, MX, TXT, AAAA or TYPEn)"
                    ));
                }
            },
        })
    }
}

/// Why bytes were rejected as a DNS message: what was wrong and at which offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// Byte offset where decoding failed.
    pub at: usize,
    /// What was wrong.
    pub what: &'static str,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

fn bad(at: usize, what: &'static str) -> Malformed {
    Malformed { at, what }
}

/// The fixed 12-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Query id.
    pub id: u16,
    /// Flags: QR, opcode, AA, TC, RD, RA, Z, RCODE.
    pub flags: u16,
    /// Question count.
    pub qdcount: u16,
    /// Answer count.
    pub ancount: u16,
    /// Authority count.
    pub nscount: u16,
    /// Additional count.
    pub arcount: u16,
}

impl Header {
    /// A response (QR set)?
    pub fn is_response(&self) -> bool {
        self.flags & FLAG_QR != 0
    }

    /// Truncated (TC set)?
    pub fn truncated(&self) -> bool {
        self.flags & FLAG_TC != 0
    }

    /// Response code (low 4 bits of the flags).
    pub fn rcode(&self) -> u8 {
        (self.flags & 0x000f) as u8
    }
}

/// Name of a response code, for messages.
pub fn rcode_name(rcode: u8) -> String {
    match rcode {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("RCODE{n}"),
    }
}

/// One question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Name in text form (see [`Record::name`]).
    pub name: String,
    /// Type.
    pub qtype: DnsType,
    /// Class (1 = IN).
    pub class: u16,
}

/// Data of an answer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData {
    /// A.
    A(Ipv4Addr),
    /// AAAA.
    Aaaa(Ipv6Addr),
    /// CNAME, NS or PTR target (the type says which).
    Name(DnsType, String),
    /// MX.
    Mx {
        /// Preference.
        preference: u16,
        /// Mail exchange host.
        exchange: String,
    },
    /// TXT: its character strings.
    Txt(Vec<Vec<u8>>),
    /// SOA.
    Soa {
        /// Primary name server.
        mname: String,
        /// Responsible mailbox.
        rname: String,
        /// Serial, refresh, retry, expire, minimum.
        numbers: [u32; 5],
    },
    /// Any other type, undecoded.
    Other {
        /// Type number (not one of the types above).
        rtype: u16,
        /// Raw data.
        data: Vec<u8>,
    },
}

impl RData {
    /// The record type of this data.
    pub fn rtype(&self) -> DnsType {
        match self {
            RData::A(_) => DnsType::A,
            RData::Aaaa(_) => DnsType::Aaaa,
            RData::Name(t, _) => *t,
            RData::Mx { .. } => DnsType::Mx,
            RData::Txt(_) => DnsType::Txt,
            RData::Soa { .. } => DnsType::Soa,
            RData::Other { rtype, .. } => DnsType::from_code(*rtype),
        }
    }

    /// The data as text for `expect` matching: the address, the target name (MX: the
    /// exchange), the TXT strings joined, the SOA fields; `None` for undecoded types.
    pub fn text(&self) -> Option<String> {
        Some(match self {
            RData::A(a) => a.to_string(),
            RData::Aaaa(a) => a.to_string(),
            RData::Name(_, n) => n.clone(),
            RData::Mx { exchange, .. } => exchange.clone(),
            RData::Txt(parts) => parts
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect::<Vec<_>>()
                .join(""),
            RData::Soa {
                mname,
                rname,
                numbers: [a, b, c, d, e],
            } => format!("{mname} {rname} {a} {b} {c} {d} {e}"),
            RData::Other { .. } => return None,
        })
    }
}

/// One answer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Owner name in text form: labels joined by `.` without the final dot, `.` for the
    /// root; bytes other than printable ASCII, `.` and `\` written as `\DDD`.
    pub name: String,
    /// Class (1 = IN).
    pub class: u16,
    /// Time to live.
    pub ttl: u32,
    /// Data (which carries the type).
    pub data: RData,
}

/// A decoded message: header, questions and answer records (authority and additional
/// sections are not decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Header (counts as received).
    pub header: Header,
    /// Questions.
    pub questions: Vec<Question>,
    /// Answer records.
    pub answers: Vec<Record>,
}

/// Bounds-checked reads.
fn u16_at(buf: &[u8], at: usize) -> Result<u16, Malformed> {
    match buf.get(at..at + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => Err(bad(at, "message ends inside a field")),
    }
}

fn u32_at(buf: &[u8], at: usize) -> Result<u32, Malformed> {
    match buf.get(at..at + 4) {
        Some(b) => Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        None => Err(bad(at, "message ends inside a field")),
    }
}

/// Decode the header.
pub fn decode_header(buf: &[u8]) -> Result<Header, Malformed> {
    if buf.len() < 12 {
        return Err(bad(buf.len(), "shorter than a DNS header"));
    }
    Ok(Header {
        id: u16_at(buf, 0)?,
        flags: u16_at(buf, 2)?,
        qdcount: u16_at(buf, 4)?,
        ancount: u16_at(buf, 6)?,
        nscount: u16_at(buf, 8)?,
        arcount: u16_at(buf, 10)?,
    })
}

fn push_label_text(out: &mut String, label: &[u8]) {
    for &b in label {
        if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\{b:03}"));
        }
    }
}

/// Read a (possibly compressed) name at `start`; returns its text and the offset after its
/// in-place part.
fn read_name(buf: &[u8], start: usize) -> Result<(String, usize), Malformed> {
    let mut text = String::new();
    let mut pos = start;
    // Where the current run of labels began: a pointer must point before it, so every hop
    // goes strictly backwards and no pointer chain can loop.
    let mut run_start = start;
    let mut after = None;
    let mut hops = 0;
    let mut wire_len = 1;
    loop {
        let len = *buf.get(pos).ok_or(bad(pos, "message ends inside a name"))?;
        match len & 0xc0 {
            0x00 if len == 0 => {
                let end = after.unwrap_or(pos + 1);
                if text.is_empty() {
                    text.push('.');
                }
                return Ok((text, end));
            }
            0x00 => {
                let len = usize::from(len);
                let label = buf
                    .get(pos + 1..pos + 1 + len)
                    .ok_or(bad(pos, "message ends inside a label"))?;
                wire_len += 1 + len;
                if wire_len > MAX_NAME {
                    return Err(bad(pos, "name longer than 255 bytes"));
                }
                if !text.is_empty() {
                    text.push('.');
                }
                push_label_text(&mut text, label);
                pos += 1 + len;
            }
            0xc0 => {
                let low = *buf
                    .get(pos + 1)
                    .ok_or(bad(pos, "message ends inside a pointer"))?;
                let target = (usize::from(len & 0x3f) << 8) | usize::from(low);
                if target >= run_start {
                    return Err(bad(pos, "compression pointer does not point backwards"));
                }
                hops += 1;
                if hops > MAX_POINTER_HOPS {
                    return Err(bad(pos, "too many compression pointers"));
                }
                after.get_or_insert(pos + 2);
                pos = target;
                run_start = target;
            }
            _ => return Err(bad(pos, "reserved label type")),
        }
    }
}

fn read_rdata(buf: &[u8], rtype: u16, start: usize, len: usize) -> Result<RData, Malformed> {
    let end = start + len;
    let data = buf
        .get(start..end)
        .ok_or(bad(start, "record data runs past the message"))?;
    // A name inside record data must end exactly where the data ends.
    let name_to_end = |at: usize| -> Result<String, Malformed> {
        let (n, next) = read_name(buf, at)?;
        if next != end {
            return Err(bad(at, "record data length does not match its content"));
        }
        Ok(n)
    };
    let t = DnsType::from_code(rtype);
    Ok(match t {
        DnsType::A => match <[u8; 4]>::try_from(data) {
            Ok(a) => RData::A(Ipv4Addr::from(a)),
            Err(_) => return Err(bad(start, "A record data is not 4 bytes")),
        },
        DnsType::Aaaa => match <[u8; 16]>::try_from(data) {
            Ok(a) => RData::Aaaa(Ipv6Addr::from(a)),
            Err(_) => return Err(bad(start, "AAAA record data is not 16 bytes")),
        },
        DnsType::Cname | DnsType::Ns | DnsType::Ptr => RData::Name(t, name_to_end(start)?),
        DnsType::Mx => RData::Mx {
            preference: u16_at(data, 0).map_err(|_| bad(start, "MX data too short"))?,
            exchange: name_to_end(start + 2)?,
        },
        DnsType::Txt => {
            let mut parts = Vec::new();
            let mut p = 0;
            while p < data.len() {
                let l = usize::from(data[p]);
                let s = data
                    .get(p + 1..p + 1 + l)
                    .ok_or(bad(start + p, "TXT string runs past its record"))?;
                parts.push(s.to_vec());
                p += 1 + l;
            }
            RData::Txt(parts)
        }
        DnsType::Soa => {
            let (mname, p) = read_name(buf, start)?;
            let (rname, p) = read_name(buf, p)?;
            if p + 20 != end {
                return Err(bad(p, "SOA record data length does not match its content"));
            }
            let mut numbers = [0u32; 5];
            for (i, n) in numbers.iter_mut().enumerate() {
                *n = u32_at(buf, p + 4 * i)?;
            }
            RData::Soa {
                mname,
                rname,
                numbers,
            }
        }
        DnsType::Other(rtype) => RData::Other {
            rtype,
            data: data.to_vec(),
        },
    })
}

/// Decode a message: header, questions, answer records. Anything malformed in those is an
/// error; the authority and additional sections are not looked at.
pub fn decode(buf: &[u8]) -> Result<Message, Malformed> {
    let header = decode_header(buf)?;
    let mut pos = 12;
    let mut questions = Vec::new();
    for _ in 0..header.qdcount {
        let (name, p) = read_name(buf, pos)?;
        questions.push(Question {
            name,
            qtype: DnsType::from_code(u16_at(buf, p)?),
            class: u16_at(buf, p + 2)?,
        });
        pos = p + 4;
    }
    let mut answers = Vec::new();
    for _ in 0..header.ancount {
        let (name, p) = read_name(buf, pos)?;
        let rtype = u16_at(buf, p)?;
        let class = u16_at(buf, p + 2)?;
        let ttl = u32_at(buf, p + 4)?;
        let len = usize::from(u16_at(buf, p + 8)?);
        let data = read_rdata(buf, rtype, p + 10, len)?;
        answers.push(Record {
            name,
            class,
            ttl,
            data,
        });
        pos = p + 10 + len;
    }
    Ok(Message {
        header,
        questions,
        answers,
    })
}

/// The labels of a name given as text (`www.example.com`, a final dot allowed, `.` or the
/// empty string for the root). Labels are 1-63 printable ASCII bytes without `\`; the
/// whole name at most 255 bytes on the wire.
pub fn name_labels(name: &str) -> Result<Vec<&str>, String> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let labels: Vec<&str> = trimmed.split('.').collect();
    let mut wire = 1;
    for l in &labels {
        if l.is_empty() || l.len() > 63 {
            return Err(format!(
                "DNS name {name:?}: every label must be 1 to 63 bytes"
            ));
        }
        if !l.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') {
            return Err(format!(
                "DNS name {name:?}: only printable ASCII without spaces or backslashes"
            ));
        }
        wire += 1 + l.len();
    }
    if wire > MAX_NAME {
        return Err(format!("DNS name {name:?} is longer than 255 bytes"));
    }
    Ok(labels)
}

/// The reverse-lookup name of an address (`in-addr.arpa` / `ip6.arpa`).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(a) => {
            let mut s = String::new();
            for b in a.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s + "ip6.arpa"
        }
    }
}

/// Writes names with compression (RFC 1035 4.1.4): each suffix written is remembered and
/// later occurrences become pointers.
#[derive(Default)]
struct NameWriter {
    seen: Vec<(String, usize)>,
}

impl NameWriter {
    fn write(&mut self, out: &mut Vec<u8>, name: &str, compress: bool) -> Result<(), String> {
        let labels = name_labels(name)?;
        for i in 0..labels.len() {
            let suffix = labels[i..].join(".");
            if compress && let Some((_, off)) = self.seen.iter().find(|(s, _)| *s == suffix) {
                out.extend_from_slice(&(0xc000 | *off as u16).to_be_bytes());
                return Ok(());
            }
            if out.len() < 0x3fff {
                self.seen.push((suffix, out.len()));
            }
            out.push(labels[i].len() as u8);
            out.extend_from_slice(labels[i].as_bytes());
        }
        out.push(0);
        Ok(())
    }
}

/// Encode a query for `name` / `qtype`, class IN, with `id` and RD set.
pub fn encode_query(id: u16, name: &str, qtype: DnsType) -> Result<Vec<u8>, String> {
    encode(&Message {
        header: Header {
            id,
            flags: FLAG_RD,
            qdcount: 1,
            ancount: 0,
            nscount: 0,
            arcount: 0,
        },
        questions: vec![Question {
            name: name.to_string(),
            qtype,
            class: CLASS_IN,
        }],
        answers: Vec::new(),
    })
}

/// Encode a message with name compression (the question and answer counts are taken from
/// the lists, authority and additional counts are written as 0). Used for queries and by
/// tests and test servers to build answers. Names must be valid for [`name_labels`].
pub fn encode(m: &Message) -> Result<Vec<u8>, String> {
    encode_with(m, true)
}

/// [`encode`] with or without name compression.
pub fn encode_with(m: &Message, compress: bool) -> Result<Vec<u8>, String> {
    let count = |n: usize, what: &str| {
        u16::try_from(n).map_err(|_| format!("too many {what} for one DNS message"))
    };
    let mut out = Vec::with_capacity(512);
    let h = &m.header;
    for v in [
        h.id,
        h.flags,
        count(m.questions.len(), "questions")?,
        count(m.answers.len(), "answers")?,
        0,
        0,
    ] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    let mut names = NameWriter::default();
    for q in &m.questions {
        names.write(&mut out, &q.name, compress)?;
        out.extend_from_slice(&q.qtype.code().to_be_bytes());
        out.extend_from_slice(&q.class.to_be_bytes());
    }
    for r in &m.answers {
        names.write(&mut out, &r.name, compress)?;
        out.extend_from_slice(&r.data.rtype().code().to_be_bytes());
        out.extend_from_slice(&r.class.to_be_bytes());
        out.extend_from_slice(&r.ttl.to_be_bytes());
        let len_at = out.len();
        out.extend_from_slice(&[0, 0]);
        match &r.data {
            RData::A(a) => out.extend_from_slice(&a.octets()),
            RData::Aaaa(a) => out.extend_from_slice(&a.octets()),
            RData::Name(_, n) => names.write(&mut out, n, compress)?,
            RData::Mx {
                preference,
                exchange,
            } => {
                out.extend_from_slice(&preference.to_be_bytes());
                names.write(&mut out, exchange, compress)?;
            }
            RData::Txt(parts) => {
                for p in parts {
                    let l = u8::try_from(p.len())
                        .map_err(|_| "TXT string longer than 255 bytes".to_string())?;
                    out.push(l);
                    out.extend_from_slice(p);
                }
            }
            RData::Soa {
                mname,
                rname,
                numbers,
            } => {
                names.write(&mut out, mname, compress)?;
                names.write(&mut out, rname, compress)?;
                for n in numbers {
                    out.extend_from_slice(&n.to_be_bytes());
                }
            }
            RData::Other { data, .. } => out.extend_from_slice(data),
        }
        let len = u16::try_from(out.len() - len_at - 2)
            .map_err(|_| "record data longer than 65535 bytes".to_string())?;
        out[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
    }
    Ok(out)
}

/// Same name, ignoring ASCII case and a final dot.
fn same_name(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        let t = s.strip_suffix('.').unwrap_or(s);
        if t.is_empty() {
            ".".to_string()
        } else {
            t.to_ascii_lowercase()
        }
    };
    norm(a) == norm(b)
}

/// The query of one probe and how its answers are judged (sans-IO).
#[derive(Debug, Clone)]
pub struct Query {
    id: u16,
    name: String,
    qtype: DnsType,
    wire: Vec<u8>,
}

/// What one received message means for a [`Query`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not the answer (other id, not a response, other question): keep waiting.
    Ignore(String),
    /// The answer, truncated (TC): ask again over TCP.
    Truncated,
    /// The answer: up.
    Up,
    /// The answer: down, with why.
    Down(String),
}

impl Query {
    /// A query for `name` / `qtype` with `id`.
    pub fn new(id: u16, name: &str, qtype: DnsType) -> Result<Self, String> {
        Ok(Query {
            id,
            name: name.to_string(),
            qtype,
            wire: encode_query(id, name, qtype)?,
        })
    }

    /// The query on the wire (without the TCP length prefix).
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// Judge one received message. `udp`: it came over UDP, where TC asks for a TCP retry
    /// (over TCP a TC flag is ignored and the answer judged as it is).
    pub fn judge(&self, msg: &[u8], expect: Option<&str>, udp: bool) -> Verdict {
        let h = match decode_header(msg) {
            Ok(h) => h,
            Err(e) => return Verdict::Ignore(format!("not a DNS message ({e})")),
        };
        if h.id != self.id {
            return Verdict::Ignore(format!(
                "answer with id {:#06x}, expected {:#06x}",
                h.id, self.id
            ));
        }
        if !h.is_response() {
            return Verdict::Ignore("a query, not a response".into());
        }
        if udp && h.truncated() {
            return Verdict::Truncated;
        }
        let m = match decode(msg) {
            Ok(m) => m,
            Err(e) => return Verdict::Down(format!("malformed DNS answer: {e}")),
        };
        let ours = |q: &Question| {
            same_name(&q.name, &self.name) && q.qtype == self.qtype && q.class == CLASS_IN
        };
        // Error answers may omit the question; a NOERROR answer must echo ours.
        let question_ok = match m.questions.as_slice() {
            [q] => ours(q),
            [] => h.rcode() != 0,
            _ => false,
        };
        if !question_ok {
            let got: Vec<String> = m
                .questions
                .iter()
                .map(|q| format!("{} {}", q.name, q.qtype))
                .collect();
            return Verdict::Ignore(format!("answer to another question ({})", got.join(", ")));
        }
        if h.rcode() != 0 {
            return Verdict::Down(format!(
                "{} {}: {} (rcode {})",
                self.name,
                self.qtype,
                rcode_name(h.rcode()),
                h.rcode()
            ));
        }
        let Some(want) = expect else {
            return Verdict::Up;
        };
        let texts: Vec<String> = m.answers.iter().filter_map(|r| r.data.text()).collect();
        let want_l = want.strip_suffix('.').unwrap_or(want).to_ascii_lowercase();
        let found = m.answers.iter().zip(&texts).any(|(r, t)| match r.data {
            // TXT is compared as is; names and addresses without regard to case.
            RData::Txt(_) => t.contains(want),
            _ => t.to_ascii_lowercase().contains(&want_l),
        });
        if found {
            Verdict::Up
        } else if texts.is_empty() {
            Verdict::Down(format!(
                "{} {}: no answer records (wanted {want:?})",
                self.name, self.qtype
            ))
        } else {
            Verdict::Down(format!(
                "{} {}: no answer contains {want:?}: got {}",
                self.name,
                self.qtype,
                texts.join(", ")
            ))
        }
    }
}

/// What a DNS check asks.
#[derive(Debug, Clone, Copy)]
pub struct DnsRequest<'a> {
    /// Name to query.
    pub name: &'a str,
    /// Type.
    pub qtype: DnsType,
    /// Text an answer must contain.
    pub expect: Option<&'a str>,
    /// TCP only.
    pub tcp: bool,
}

/// Run the DNS check against `target` within `timeout` (the probe's own deadline, so the
/// timeout message can say what was ignored).
pub async fn check(
    target: SocketAddr,
    req: DnsRequest<'_>,
    timeout: Duration,
) -> Result<ProbeOutcome, String> {
    let q = Query::new(rand::random(), req.name, req.qtype)
        .map_err(|e| format!("DNS check of {target}: {e}"))?;
    let mut ignored: Option<String> = None;
    let run = async {
        if req.tcp {
            return over_tcp(target, &q, req.expect).await;
        }
        match over_udp(target, &q, req.expect, &mut ignored).await? {
            Some(o) => Ok(o),
            None => over_tcp(target, &q, req.expect)
                .await
                .map_err(|e| format!("{e} (asked over TCP after a truncated UDP answer)")),
        }
    };
    let r = tokio::time::timeout(timeout, run).await;
    match r {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no DNS answer from {target} within {} ms{}",
            timeout.as_millis(),
            ignored.map_or(String::new(), |w| format!(" (ignored: {w})"))
        )),
    }
}

/// The UDP exchange; `Ok(None)` = truncated, retry over TCP.
async fn over_udp(
    target: SocketAddr,
    q: &Query,
    expect: Option<&str>,
    ignored: &mut Option<String>,
) -> Result<Option<ProbeOutcome>, String> {
    let err = |e: std::io::Error| format!("DNS query to {target} over UDP: {e}");
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(local).await.map_err(err)?;
    // Connected: the kernel drops datagrams from other sources and reports ICMP errors.
    sock.connect(target).await.map_err(err)?;
    sock.send(q.wire()).await.map_err(err)?;
    // Without EDNS, answers over UDP are at most 512 bytes; room for more does no harm.
    let mut buf = vec![0u8; 4096];
    loop {
        let n = sock.recv(&mut buf).await.map_err(err)?;
        match q.judge(&buf[..n], expect, true) {
            Verdict::Ignore(why) => {
                tracing::debug!(%target, %why, "DNS check: datagram ignored");
                *ignored = Some(why);
            }
            Verdict::Truncated => return Ok(None),
            Verdict::Up => return Ok(Some(ProbeOutcome::Up)),
            Verdict::Down(why) => return Err(format!("DNS answer from {target}: {why}")),
        }
    }
}

/// The TCP exchange: one length-prefixed query, one answer.
async fn over_tcp(
    target: SocketAddr,
    q: &Query,
    expect: Option<&str>,
) -> Result<ProbeOutcome, String> {
    let err = |e: std::io::Error| format!("DNS query to {target} over TCP: {e}");
    let mut s = super::probe::connect_rst(target).await?;
    let len = u16::try_from(q.wire().len()).map_err(|_| "DNS query too long".to_string())?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(q.wire());
    s.write_all(&out).await.map_err(err)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.map_err(err)?;
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut msg).await.map_err(err)?;
    match q.judge(&msg, expect, false) {
        Verdict::Up => Ok(ProbeOutcome::Up),
        Verdict::Ignore(why) | Verdict::Down(why) => {
            Err(format!("DNS answer from {target} over TCP: {why}"))
        }
        Verdict::Truncated => Err(format!("DNS answer from {target} over TCP: truncated")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn answer(id: u16, q: &Question, rcode: u16, answers: Vec<Record>) -> Message {
        Message {
            header: Header {
                id,
                flags: FLAG_QR | FLAG_RD | 0x0080 | rcode,
                qdcount: 1,
                ancount: answers.len() as u16,
                nscount: 0,
                arcount: 0,
            },
            questions: vec![q.clone()],
            answers,
        }
    }

    fn rec(name: &str, data: RData) -> Record {
        Record {
            name: name.into(),
            class: 1,
            ttl: 300,
            data,
        }
    }

    #[test]
    fn query_wire_format() {
        let w = encode_query(0x1234, "www.example.com.", DnsType::A).unwrap();
        let mut want = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(b"\x03www\x07example\x03com\x00\x00\x01\x00\x01");
        assert_eq!(w, want);
        let root = encode_query(1, ".", DnsType::Soa).unwrap();
        assert_eq!(&root[12..], &[0, 0, 6, 0, 1]);
        assert!(encode_query(1, "a..b", DnsType::A).is_err());
        assert!(encode_query(1, &"x".repeat(64), DnsType::A).is_err());
        assert!(encode_query(1, "has space.com", DnsType::A).is_err());
        let long = vec!["abcdefghi"; 26].join(".");
        assert!(encode_query(1, &long, DnsType::A).is_err());
    }

    #[test]
    fn types_parse_and_print() {
        for t in [
            "A", "ns", "CNAME", "soa", "PTR", "mx", "TXT", "aaaa", "TYPE99",
        ] {
            let p: DnsType = t.parse().unwrap();
            assert_eq!(p.to_string(), t.to_ascii_uppercase());
            assert_eq!(DnsType::from_code(p.code()), p);
        }
        assert_eq!("type1".parse::<DnsType>().unwrap(), DnsType::A);
        assert!("SRVX".parse::<DnsType>().is_err());
        assert_eq!(DnsType::default(), DnsType::Soa);
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name("192.0.2.10".parse().unwrap()),
            "10.2.0.192.in-addr.arpa"
        );
        let v6 = reverse_name("2001:db8::1".parse().unwrap());
        assert!(v6.starts_with("1.0.0.0.0.0.0.0"), "{v6}");
        assert!(v6.ends_with("8.b.d.0.1.0.0.2.ip6.arpa"), "{v6}");
    }

    #[test]
    fn judge_semantics() {
        let q = Query::new(7, "www.example.com", DnsType::A).unwrap();
        let qq = Question {
            name: "WWW.Example.com.".into(),
            qtype: DnsType::A,
            class: 1,
        };
        let a = rec("www.example.com", RData::A(Ipv4Addr::new(192, 0, 2, 1)));
        let ok = encode(&answer(7, &qq, 0, vec![a.clone()])).unwrap();
        assert_eq!(q.judge(&ok, None, true), Verdict::Up);
        assert_eq!(q.judge(&ok, Some("192.0.2.1"), true), Verdict::Up);
        assert!(
            matches!(q.judge(&ok, Some("192.0.2.9"), true), Verdict::Down(r) if r.contains("192.0.2.1"))
        );
        let other_id = encode(&answer(8, &qq, 0, vec![a.clone()])).unwrap();
        assert!(matches!(q.judge(&other_id, None, true), Verdict::Ignore(_)));
        assert!(matches!(q.judge(&q.wire, None, true), Verdict::Ignore(_)));
        let servfail = encode(&answer(7, &qq, 2, vec![])).unwrap();
        assert!(
            matches!(q.judge(&servfail, None, true), Verdict::Down(r) if r.contains("SERVFAIL"))
        );
        let nx = encode(&answer(7, &qq, 3, vec![])).unwrap();
        assert!(matches!(q.judge(&nx, None, true), Verdict::Down(r) if r.contains("NXDOMAIN")));
        let other_q = Question {
            name: "evil.example".into(),
            ..qq.clone()
        };
        let wrong = encode(&answer(7, &other_q, 0, vec![a.clone()])).unwrap();
        assert!(matches!(q.judge(&wrong, None, true), Verdict::Ignore(_)));
        let mut tc = answer(7, &qq, 0, vec![]);
        tc.header.flags |= FLAG_TC;
        let tc = encode(&tc).unwrap();
        assert_eq!(q.judge(&tc, None, true), Verdict::Truncated);
        assert_eq!(q.judge(&tc, None, false), Verdict::Up);
        let empty = encode(&answer(7, &qq, 0, vec![])).unwrap();
        assert!(
            matches!(q.judge(&empty, Some("x"), true), Verdict::Down(r) if r.contains("no answer records"))
        );
        // A CNAME chain: the target name and the final address both match.
        let chain = encode(&answer(
            7,
            &qq,
            0,
            vec![
                rec(
                    "www.example.com",
                    RData::Name(DnsType::Cname, "web.example.net".into()),
                ),
                rec("web.example.net", RData::A(Ipv4Addr::new(192, 0, 2, 5))),
            ],
        ))
        .unwrap();
        assert_eq!(q.judge(&chain, Some("WEB.example.net."), true), Verdict::Up);
        assert_eq!(q.judge(&chain, Some("192.0.2.5"), true), Verdict::Up);
    }

    #[test]
    fn pointer_loops_and_forward_pointers_are_rejected() {
        let mut m = vec![0, 1, 0x81, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        // A name that points at itself.
        let mut own = m.clone();
        own.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert!(decode(&own).unwrap_err().what.contains("backwards"));
        // A forward pointer.
        let mut fwd = m.clone();
        fwd.extend_from_slice(&[0xc0, 14, 0, 0, 1, 0, 1]);
        assert!(decode(&fwd).is_err());
        // A reserved label type.
        m.extend_from_slice(&[0x40, 0, 0, 1, 0, 1]);
        assert!(decode(&m).is_err());
    }

    fn label() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9-]{1,12}"
    }

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(".".to_string()),
            proptest::collection::vec(label(), 1..5).prop_map(|l| l.join(".")),
            // Shared suffixes exercise compression.
            proptest::collection::vec(label(), 0..3).prop_map(|l| {
                let mut l = l;
                l.push("example".into());
                l.push("com".into());
                l.join(".")
            }),
        ]
    }

    fn rdata() -> impl Strategy<Value = RData> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|a| RData::A(a.into())),
            any::<[u8; 16]>().prop_map(|a| RData::Aaaa(a.into())),
            (
                prop_oneof![Just(DnsType::Cname), Just(DnsType::Ns), Just(DnsType::Ptr)],
                name()
            )
                .prop_map(|(t, n)| RData::Name(t, n)),
            (any::<u16>(), name()).prop_map(|(preference, exchange)| RData::Mx {
                preference,
                exchange
            }),
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..4)
                .prop_map(RData::Txt),
            (name(), name(), any::<[u32; 5]>()).prop_map(|(mname, rname, numbers)| RData::Soa {
                mname,
                rname,
                numbers
            }),
            (100u16..200, proptest::collection::vec(any::<u8>(), 0..30))
                .prop_map(|(rtype, data)| RData::Other { rtype, data }),
        ]
    }

    fn message() -> impl Strategy<Value = Message> {
        (
            any::<u16>(),
            any::<u16>(),
            proptest::collection::vec((name(), any::<u16>(), any::<u16>()), 0..3),
            proptest::collection::vec((name(), any::<u16>(), any::<u32>(), rdata()), 0..6),
        )
            .prop_map(|(id, flags, qs, rs)| Message {
                header: Header {
                    id,
                    flags,
                    qdcount: qs.len() as u16,
                    ancount: rs.len() as u16,
                    nscount: 0,
                    arcount: 0,
                },
                questions: qs
                    .into_iter()
                    .map(|(name, t, class)| Question {
                        name,
                        qtype: DnsType::from_code(t),
                        class,
                    })
                    .collect(),
                answers: rs
                    .into_iter()
                    .map(|(name, class, ttl, data)| Record {
                        name,
                        class,
                        ttl,
                        data,
                    })
                    .collect(),
            })
    }

    proptest! {
        #[test]
        fn round_trip(m in message(), compress in any::<bool>()) {
            let wire = encode_with(&m, compress).unwrap();
            prop_assert_eq!(decode(&wire).unwrap(), m);
        }

        #[test]
        fn truncation_is_an_error(m in message()) {
            let wire = encode(&m).unwrap();
            for cut in 0..wire.len() {
                // Every section is decoded, so any strict prefix is an error.
                prop_assert!(decode(&wire[..cut]).is_err(), "prefix of {} bytes decoded", cut);
            }
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&bytes);
            let q = Query::new(1, "example.com", DnsType::A).unwrap();
            let _ = q.judge(&bytes, Some("x"), true);
        }

        #[test]
        fn mutations_never_panic(m in message(), compress in any::<bool>(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let mut wire = encode(&m).unwrap();
            for (i, b) in flips {
                let n = wire.len();
                wire[i % n] = b;
            }
            // Whatever still decodes re-encodes to the same message (as the fuzz target
            // asserts), unless its names need escapes.
            if let Ok(d) = decode(&wire)
                && let Ok(again) = encode_with(&d, compress)
            {
                let mut back = decode(&again).unwrap();
                back.header.nscount = d.header.nscount;
                back.header.arcount = d.header.arcount;
                prop_assert_eq!(back, d);
            }
        }
    }
}
