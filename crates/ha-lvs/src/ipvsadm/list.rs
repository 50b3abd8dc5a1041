//! The `ipvsadm -L -n` listing, byte for byte.

use std::net::Ipv4Addr;

use super::addrport;
use super::order::{cmp_dests, cmp_services, msort_by};
use crate::model::*;

/// Which columns to show (ipvsadm's `--stats`, `--rate`, `--thresholds`, `--persistent-conn`,
/// `--tun-info`, or the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListFormat {
    /// Forward, weight, active and inactive connections.
    #[default]
    Default,
    /// `--stats`.
    Stats,
    /// `--rate`.
    Rate,
    /// `--thresholds`.
    Thresholds,
    /// `--persistent-conn`.
    PersistentConn,
    /// `--tun-info`.
    TunInfo,
}

/// Options of [`render_list`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ListOptions {
    /// Columns.
    pub format: ListFormat,
    /// `--exact`: full numbers instead of K/M/G/T.
    pub exact: bool,
    /// `--nosort`.
    pub nosort: bool,
}

fn largenum(out: &mut String, i: u64, exact: bool) {
    if exact {
        let len = i.to_string().len();
        let w = if len <= 8 { 9 } else { len + 1 };
        out.push_str(&format!("{i:>w$}"));
        return;
    }
    if i < 100_000_000 {
        out.push_str(&format!("{i:>9}"));
    } else if i < 1_000_000_000 {
        out.push_str(&format!("{:>8}K", i / 1000));
    } else if i < 100_000_000_000 {
        out.push_str(&format!("{:>8}M", i / 1_000_000));
    } else if i < 100_000_000_000_000 {
        out.push_str(&format!("{:>8}G", i / 1_000_000_000));
    } else {
        out.push_str(&format!("{:>8}T", i / 1_000_000_000_000));
    }
}

fn title(format: ListFormat) -> String {
    let head = "Prot LocalAddress:Port";
    match format {
        ListFormat::Stats => format!(
            "{head:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port\n",
            "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
        ),
        ListFormat::Rate => format!(
            "{head:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port\n",
            "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"
        ),
        ListFormat::Thresholds => format!(
            "{head:<33} {:<10} {:<10} {:<10} {:<10}\n  -> RemoteAddress:Port\n",
            "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
        ),
        ListFormat::PersistentConn => format!(
            "{head:<33} {:<9} {:<11} {:<10} {:<10}\n  -> RemoteAddress:Port\n",
            "Weight", "PersistConn", "ActiveConn", "InActConn"
        ),
        ListFormat::TunInfo => "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n".to_string(),
        ListFormat::Default => "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n".to_string(),
    }
}

fn fwd_name(f: &Forward) -> &'static str {
    match f {
        Forward::Masq => "Masq",
        Forward::Local => "Local",
        Forward::Tunnel(_) => "Tunnel",
        Forward::Route => "Route",
        // NULL through printf("%s") in ipvsadm.
        Forward::Bypass => "(null)",
    }
}

fn tun_info(f: &Forward) -> String {
    let flag = |c: TunnelCsum| match c {
        TunnelCsum::NoCsum => "-c",
        TunnelCsum::Csum => "+c",
        TunnelCsum::RemCsum => "r+c",
    };
    match f {
        Forward::Tunnel(t) => match t.kind {
            TunnelType::Ipip => "ipip".to_string(),
            TunnelType::Gue => format!("gue:{}:{}", t.port, flag(t.csum)),
            TunnelType::Gre => format!("gre:{}", flag(t.csum)),
        },
        _ => "n/a".to_string(),
    }
}

fn truncate(s: &mut String, n: usize) {
    if s.len() > n {
        s.truncate(n);
    }
}

fn service_block(out: &mut String, e: &ServiceEntry, opts: &ListOptions) {
    let s = &e.service;
    let v6 = s.key.family() == Family::V6;
    let svc_name = match &s.key {
        ServiceKey::Fwmark {
            mark,
            family: Family::V4,
        } => format!("FWM  {mark}"),
        ServiceKey::Fwmark {
            mark,
            family: Family::V6,
        } => format!("FWM  {mark} IPv6"),
        ServiceKey::Addr { protocol, addr } => {
            let mut n = format!("{:<4} {}", protocol.name(), addrport(addr));
            if !v6 {
                truncate(&mut n, 33);
            }
            n
        }
    };
    match opts.format {
        ListFormat::Stats | ListFormat::Rate => {
            out.push_str(&format!("{svc_name:<33}"));
            let st = &e.stats;
            let vals = if opts.format == ListFormat::Stats {
                [st.conns, st.inpkts, st.outpkts, st.inbytes, st.outbytes]
            } else {
                [st.cps, st.inpps, st.outpps, st.inbps, st.outbps]
            };
            for v in vals {
                largenum(out, v, opts.exact);
            }
        }
        _ => {
            out.push_str(&format!("{svc_name} {}", s.scheduler));
            if !s.sched_flags.is_empty() {
                out.push_str(&format!(" ({})", s.sched_flags.render(&s.scheduler)));
            }
            if let Some(p) = &s.persistence {
                out.push_str(&format!(" persistent {}", p.timeout));
                match p.netmask {
                    Netmask::V4(m) if !v6 && m != Ipv4Addr::BROADCAST => {
                        out.push_str(&format!(" mask {m}"))
                    }
                    Netmask::V6(n) if v6 && n != 128 => out.push_str(&format!(" mask {n}")),
                    _ => {}
                }
                if let Some(pe) = &s.pe_name {
                    out.push_str(&format!(" pe {pe}"));
                }
            }
            if s.one_packet {
                out.push_str(" ops");
            }
        }
    }
    out.push('\n');

    let mut dests = e.dests.clone();
    if !opts.nosort {
        msort_by(&mut dests, &|a: &DestEntry, b: &DestEntry| {
            cmp_dests(&a.dest.addr, &b.dest.addr)
        });
    }
    for d in &dests {
        let mut dname = addrport(&d.dest.addr);
        if d.dest.addr.is_ipv4() {
            truncate(&mut dname, 28);
        }
        let st = &d.stats;
        match opts.format {
            ListFormat::Stats => {
                out.push_str(&format!("  -> {dname:<28}"));
                for v in [st.conns, st.inpkts, st.outpkts, st.inbytes, st.outbytes] {
                    largenum(out, v, opts.exact);
                }
                out.push('\n');
            }
            ListFormat::Rate => {
                out.push_str(&format!(
                    "  -> {dname:<28} {:>8} {:>8} {:>8}",
                    st.cps, st.inpps, st.outpps
                ));
                largenum(out, st.inbps, opts.exact);
                largenum(out, st.outbps, opts.exact);
                out.push('\n');
            }
            ListFormat::Thresholds => out.push_str(&format!(
                "  -> {dname:<28} {:<10} {:<10} {:<10} {:<10}\n",
                d.dest.u_thresh, d.dest.l_thresh, d.active_conns, d.inact_conns
            )),
            ListFormat::PersistentConn => out.push_str(&format!(
                "  -> {dname:<28} {:<9} {:<11} {:<10} {:<10}\n",
                d.dest.weight, d.persist_conns, d.active_conns, d.inact_conns
            )),
            ListFormat::TunInfo => out.push_str(&format!(
                "  -> {dname:<28} {:<7} {:<13} {:<6} {:<10} {:<10}\n",
                fwd_name(&d.dest.forward),
                tun_info(&d.dest.forward),
                d.dest.weight as i32,
                d.active_conns,
                d.inact_conns
            )),
            ListFormat::Default => out.push_str(&format!(
                "  -> {dname:<28} {:<7} {:<6} {:<10} {:<10}\n",
                fwd_name(&d.dest.forward),
                d.dest.weight as i32,
                d.active_conns,
                d.inact_conns
            )),
        }
    }
}

/// Render `ipvsadm -L -n [--stats|--rate|...]` output for a table read from the kernel.
pub fn render_list(info: &Info, entries: &[ServiceEntry], opts: ListOptions) -> String {
    let mut out = format!(
        "IP Virtual Server version {}.{}.{} (size={})\n",
        (info.version >> 16) & 0xff,
        (info.version >> 8) & 0xff,
        info.version & 0xff,
        info.conn_tab_size as i32
    );
    out.push_str(&title(opts.format));
    let mut sorted = entries.to_vec();
    if !opts.nosort {
        msort_by(&mut sorted, &|a: &ServiceEntry, b: &ServiceEntry| {
            cmp_services(&a.service.key, &b.service.key)
        });
    }
    for e in &sorted {
        service_block(&mut out, e, &opts);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: ServiceKey, sched: Scheduler, dests: Vec<Destination>) -> ServiceEntry {
        ServiceEntry {
            service: Service::new(key, sched),
            stats: Stats::default(),
            dests: dests
                .into_iter()
                .map(|dest| DestEntry {
                    dest,
                    active_conns: 0,
                    inact_conns: 0,
                    persist_conns: 0,
                    stats: Stats::default(),
                })
                .collect(),
        }
    }

    #[test]
    fn default_listing_layout() {
        let info = Info {
            version: 0x010201,
            conn_tab_size: 4096,
        };
        let mut e = entry(
            ServiceKey::tcp("10.0.0.1:80".parse().unwrap()),
            Scheduler::Wrr,
            vec![
                Destination::new("10.0.0.3:80".parse().unwrap(), Forward::Masq).with_weight(2),
                Destination::new("10.0.0.2:80".parse().unwrap(), Forward::Route),
            ],
        );
        e.service.persistence = Some(Persistence {
            timeout: 300,
            netmask: Netmask::V4("255.255.255.0".parse().unwrap()),
        });
        let out = render_list(&info, &[e], ListOptions::default());
        let want = "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port Scheduler Flags\n\
\x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
TCP  10.0.0.1:80 wrr persistent 300 mask 255.255.255.0\n\
\x20 -> 10.0.0.2:80                  Route   1      0          0         \n\
\x20 -> 10.0.0.3:80                  Masq    2      0          0         \n";
        assert_eq!(out, want);
    }

    #[test]
    fn largenum_units() {
        let mut s = String::new();
        largenum(&mut s, 99_999_999, false);
        largenum(&mut s, 123_456_789, false);
        largenum(&mut s, 5_000_000_000, false);
        assert_eq!(s, " 99999999  123456K    5000M");
        let mut s = String::new();
        largenum(&mut s, 1_234_567_890, true);
        assert_eq!(s, " 1234567890");
    }
}
