//! Hand-written codec of `ha_core::message::Message`.
//!
//! Layouts (big-endian; `opt<T>` is a 0/1 byte then T when 1; `str` is u16 length + UTF-8;
//! `[T]` is a u16 count then the elements):
//! - kind 1 Heartbeat: incarnation u64, seq u64, view u64, flags u8 (bit0 ping_ok,
//!   bit1 standby), peers `[node u16, incarnation u64, last_seq u64, alive u8]`,
//!   groups `[group str, state u8, claim opt<u64>, grant opt<node u16, incarnation u64,
//!   claim u64>, failcount u32, flags u8 (bit0 banned, bit1 fatal, bits 2-3 operator request:
//!   0 none, 1 prefer, 2 avoid)]`
//! - kind 2 TakeoverRequest: group str, incarnation u64, claim u64
//! - kind 3 TakeoverResponse: group str, incarnation u64, claim u64, granted u8, grant_seq u64

use ha_core::message::{
    Grant, GroupReport, GroupState, Heartbeat, Message, OperatorPref, PeerReport, TakeoverRequest,
    TakeoverResponse,
};
use ha_core::{GroupId, NodeId};

use super::codec::{EncodeTooLong, Reader, Writer};
use super::{DecodeError, WireMessage};

/// Kind code of a heartbeat.
pub const KIND_HEARTBEAT: u8 = 1;
/// Kind code of a takeover request.
pub const KIND_TAKEOVER_REQUEST: u8 = 2;
/// Kind code of a takeover response.
pub const KIND_TAKEOVER_RESPONSE: u8 = 3;

const PEER_LEN: usize = 2 + 8 + 8 + 1;
const MIN_GROUP_LEN: usize = 2 + 1 + 1 + 1 + 4 + 1;

fn state_code(s: GroupState) -> u8 {
    match s {
        GroupState::Stopped => 0,
        GroupState::Starting => 1,
        GroupState::Running => 2,
        GroupState::Stopping => 3,
        GroupState::Failed => 4,
    }
}

fn state_from(v: u8) -> Result<GroupState, DecodeError> {
    Ok(match v {
        0 => GroupState::Stopped,
        1 => GroupState::Starting,
        2 => GroupState::Running,
        3 => GroupState::Stopping,
        4 => GroupState::Failed,
        v => {
            return Err(DecodeError::InvalidValue {
                field: "group.state",
                value: u64::from(v),
            });
        }
    })
}

fn flags(r: &mut Reader<'_>, field: &'static str, bits: u8) -> Result<u8, DecodeError> {
    let v = r.u8(field)?;
    if v & !bits != 0 {
        return Err(DecodeError::InvalidValue {
            field,
            value: u64::from(v),
        });
    }
    Ok(v)
}

fn encode_heartbeat(h: &Heartbeat, w: &mut Writer) -> Result<(), EncodeTooLong> {
    w.u64(h.incarnation);
    w.u64(h.seq);
    w.u64(h.view);
    w.u8(u8::from(h.ping_ok) | (u8::from(h.standby) << 1));
    w.count(h.peers.len())?;
    for p in &h.peers {
        w.u16(p.node.0);
        w.u64(p.incarnation);
        w.u64(p.last_seq);
        w.bool(p.alive);
    }
    w.count(h.groups.len())?;
    for g in &h.groups {
        w.str(g.group.as_str())?;
        w.u8(state_code(g.state));
        match g.claim {
            Some(c) => {
                w.u8(1);
                w.u64(c);
            }
            None => w.u8(0),
        }
        match g.grant {
            Some(gr) => {
                w.u8(1);
                w.u16(gr.node.0);
                w.u64(gr.incarnation);
                w.u64(gr.claim);
            }
            None => w.u8(0),
        }
        w.u32(g.failcount);
        let operator: u8 = match g.operator {
            OperatorPref::None => 0,
            OperatorPref::Prefer => 1,
            OperatorPref::Avoid => 2,
        };
        w.u8(u8::from(g.banned) | (u8::from(g.fatal) << 1) | (operator << 2));
    }
    Ok(())
}

fn decode_heartbeat(r: &mut Reader<'_>) -> Result<Heartbeat, DecodeError> {
    let incarnation = r.u64("heartbeat.incarnation")?;
    let seq = r.u64("heartbeat.seq")?;
    let view = r.u64("heartbeat.view")?;
    let f = flags(r, "heartbeat.flags", 0b11)?;
    let n = r.count("heartbeat.peers", PEER_LEN)?;
    let mut peers = Vec::with_capacity(n);
    for _ in 0..n {
        peers.push(PeerReport {
            node: NodeId(r.u16("peer.node")?),
            incarnation: r.u64("peer.incarnation")?,
            last_seq: r.u64("peer.last_seq")?,
            alive: r.bool("peer.alive")?,
        });
    }
    let n = r.count("heartbeat.groups", MIN_GROUP_LEN)?;
    let mut groups = Vec::with_capacity(n);
    for _ in 0..n {
        let group = GroupId(r.str("group.id")?);
        let state = state_from(r.u8("group.state")?)?;
        let claim = if r.bool("group.claim")? {
            Some(r.u64("group.claim")?)
        } else {
            None
        };
        let grant = if r.bool("group.grant")? {
            Some(Grant {
                node: NodeId(r.u16("grant.node")?),
                incarnation: r.u64("grant.incarnation")?,
                claim: r.u64("grant.claim")?,
            })
        } else {
            None
        };
        let failcount = r.u32("group.failcount")?;
        let gf = flags(r, "group.flags", 0b1111)?;
        let operator = match gf >> 2 {
            0 => OperatorPref::None,
            1 => OperatorPref::Prefer,
            2 => OperatorPref::Avoid,
            _ => {
                return Err(DecodeError::InvalidValue {
                    field: "group.flags",
                    value: u64::from(gf),
                });
            }
        };
        groups.push(GroupReport {
            group,
            state,
            claim,
            grant,
            failcount,
            banned: gf & 1 != 0,
            fatal: gf & 2 != 0,
            operator,
        });
    }
    Ok(Heartbeat {
        incarnation,
        seq,
        view,
        ping_ok: f & 1 != 0,
        standby: f & 2 != 0,
        peers,
        groups,
    })
}

impl WireMessage for Message {
    fn kind(&self) -> u8 {
        match self {
            Message::Heartbeat(_) => KIND_HEARTBEAT,
            Message::TakeoverRequest(_) => KIND_TAKEOVER_REQUEST,
            Message::TakeoverResponse(_) => KIND_TAKEOVER_RESPONSE,
        }
    }

    fn reliable(&self) -> bool {
        // Heartbeats carry the whole state and are superseded by the next one.
        !matches!(self, Message::Heartbeat(_))
    }

    fn encode(&self, w: &mut Writer) -> Result<(), EncodeTooLong> {
        match self {
            Message::Heartbeat(h) => encode_heartbeat(h, w)?,
            Message::TakeoverRequest(t) => {
                w.str(t.group.as_str())?;
                w.u64(t.incarnation);
                w.u64(t.claim);
            }
            Message::TakeoverResponse(t) => {
                w.str(t.group.as_str())?;
                w.u64(t.incarnation);
                w.u64(t.claim);
                w.bool(t.granted);
                w.u64(t.grant_seq);
            }
        }
        Ok(())
    }

    fn decode(kind: u8, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match kind {
            KIND_HEARTBEAT => Message::Heartbeat(decode_heartbeat(r)?),
            KIND_TAKEOVER_REQUEST => Message::TakeoverRequest(TakeoverRequest {
                group: GroupId(r.str("request.group")?),
                incarnation: r.u64("request.incarnation")?,
                claim: r.u64("request.claim")?,
            }),
            KIND_TAKEOVER_RESPONSE => Message::TakeoverResponse(TakeoverResponse {
                group: GroupId(r.str("response.group")?),
                incarnation: r.u64("response.incarnation")?,
                claim: r.u64("response.claim")?,
                granted: r.bool("response.granted")?,
                grant_seq: r.u64("response.grant_seq")?,
            }),
            k => return Err(DecodeError::UnknownKind(k)),
        })
    }
}
