//! Real-server side of direct routing and tunnelling: the VIP as a host address on a
//! non-ARPing interface (usually `lo`) and the ARP sysctls that keep the real server from
//! answering ARP for it (`arp_ignore=1`, `arp_announce=2`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_ROUTE};

use crate::error::{Error, Result};

const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RT_SCOPE_HOST: u8 = 254;

/// Where sysctls live (`/proc/sys` normally; another directory for tests).
#[derive(Debug, Clone)]
pub struct Sysctl {
    root: PathBuf,
}

impl Default for Sysctl {
    fn default() -> Self {
        Sysctl {
            root: PathBuf::from("/proc/sys"),
        }
    }
}

impl Sysctl {
    /// Sysctls under another root.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Sysctl { root: root.into() }
    }

    fn path(&self, iface: &str, name: &str) -> PathBuf {
        self.root.join("net/ipv4/conf").join(iface).join(name)
    }

    /// Write one value.
    pub fn write(&self, path: &Path, value: &str) -> Result<()> {
        std::fs::write(path, format!("{value}\n"))
            .map_err(|e| Error::io(format!("write {}", path.display()), e))
    }

    /// Set `arp_ignore=1` and `arp_announce=2` for `all` and `iface`: reply to ARP only for
    /// addresses of the receiving interface, and never announce the VIP as an ARP source.
    pub fn set_arp_for_vip(&self, iface: &str) -> Result<()> {
        for i in ["all", iface] {
            self.write(&self.path(i, "arp_ignore"), "1")?;
            self.write(&self.path(i, "arp_announce"), "2")?;
        }
        Ok(())
    }

    /// Read `arp_ignore` and `arp_announce` of an interface.
    pub fn arp_settings(&self, iface: &str) -> Result<(u8, u8)> {
        let read = |n: &str| -> Result<u8> {
            let p = self.path(iface, n);
            let s = std::fs::read_to_string(&p)
                .map_err(|e| Error::io(format!("read {}", p.display()), e))?;
            s.trim()
                .parse()
                .map_err(|_| Error::invalid(format!("{} holds {s:?}", p.display())))
        };
        Ok((read("arp_ignore")?, read("arp_announce")?))
    }
}

fn ifindex(iface: &str) -> Result<u32> {
    let c = std::ffi::CString::new(iface)
        .map_err(|_| Error::invalid(format!("bad interface name {iface:?}")))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(Error::io(
            format!("interface {iface}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(idx)
}

fn attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    buf.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

fn addr_request(kind: u16, flags: u16, vip: IpAddr, index: u32) -> Vec<u8> {
    let (family, prefix, bytes) = match vip {
        IpAddr::V4(a) => (libc::AF_INET as u8, 32u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, 128u8, a.octets().to_vec()),
    };
    let mut body = vec![family, prefix, 0, RT_SCOPE_HOST];
    body.extend_from_slice(&index.to_ne_bytes());
    attr(&mut body, IFA_LOCAL, &bytes);
    attr(&mut body, IFA_ADDRESS, &bytes);
    let mut msg = Vec::with_capacity(16 + body.len());
    msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&body);
    msg
}

/// Send one rtnetlink request and return the kernel's errno (0 = success).
fn rtnl(msg: &[u8]) -> Result<i32> {
    let mut s = Socket::new(NETLINK_ROUTE).map_err(|e| Error::io("open rtnetlink socket", e))?;
    s.bind_auto()
        .map_err(|e| Error::io("bind rtnetlink socket", e))?;
    s.connect(&NlAddr::new(0, 0))
        .map_err(|e| Error::io("connect rtnetlink socket", e))?;
    s.send(msg, 0)
        .map_err(|e| Error::io("send rtnetlink request", e))?;
    let mut buf = Vec::with_capacity(8192);
    loop {
        buf.clear();
        let n = s
            .recv(&mut buf, 0)
            .map_err(|e| Error::io("receive rtnetlink reply", e))?;
        let data = &buf[..n.min(buf.len())];
        if data.len() >= 20 && u16::from_ne_bytes([data[4], data[5]]) == NLMSG_ERROR {
            let code = i32::from_ne_bytes([data[16], data[17], data[18], data[19]]);
            return Ok(-code);
        }
        if data.is_empty() {
            return Err(Error::Protocol("empty rtnetlink reply".into()));
        }
    }
}

/// Add `vip` as a host address (/32 or /128, scope host) on `iface`. Already present is fine.
pub fn add_vip(vip: IpAddr, iface: &str) -> Result<()> {
    match rtnl(&addr_request(
        RTM_NEWADDR,
        NLM_F_CREATE | NLM_F_EXCL,
        vip,
        ifindex(iface)?,
    ))? {
        0 | libc::EEXIST => Ok(()),
        e => Err(Error::io(
            format!("add {vip} to {iface}"),
            std::io::Error::from_raw_os_error(e),
        )),
    }
}

/// Remove `vip` from `iface`. Already absent is fine.
pub fn del_vip(vip: IpAddr, iface: &str) -> Result<()> {
    match rtnl(&addr_request(RTM_DELADDR, 0, vip, ifindex(iface)?))? {
        0 | libc::EADDRNOTAVAIL | libc::ENOENT | libc::ESRCH => Ok(()),
        e => Err(Error::io(
            format!("remove {vip} from {iface}"),
            std::io::Error::from_raw_os_error(e),
        )),
    }
}

/// Full real-server setup for DR/TUN: ARP sysctls, then the VIP on `iface` (usually `lo`).
pub fn setup_real_server(vip: IpAddr, iface: &str) -> Result<()> {
    Sysctl::default().set_arp_for_vip(iface)?;
    add_vip(vip, iface)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_writes_under_a_root() {
        let dir = std::env::temp_dir().join(format!("ha-lvs-sysctl-{}", std::process::id()));
        for i in ["all", "lo"] {
            std::fs::create_dir_all(dir.join("net/ipv4/conf").join(i)).unwrap();
        }
        let s = Sysctl::at(&dir);
        s.set_arp_for_vip("lo").unwrap();
        assert_eq!(s.arp_settings("lo").unwrap(), (1, 2));
        assert_eq!(s.arp_settings("all").unwrap(), (1, 2));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn request_layout() {
        let m = addr_request(RTM_NEWADDR, 0, "10.1.2.3".parse().unwrap(), 1);
        assert_eq!(
            u32::from_ne_bytes([m[0], m[1], m[2], m[3]]) as usize,
            m.len()
        );
        assert_eq!(m[16], libc::AF_INET as u8);
        assert_eq!(m[17], 32);
        assert_eq!(&m[28..32], &[10, 1, 2, 3]);
    }
}
