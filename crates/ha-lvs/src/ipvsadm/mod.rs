//! ipvsadm's text formats: the `ipvsadm -S -n` rule format (parse and write) and the
//! `ipvsadm -L -n` listing (render), byte-identical to ipvsadm 1.31.
//!
//! ipvsadm sorts services and real servers with a C comparator that subtracts unsigned
//! addresses into an `int`, run through glibc's merge sort; the private `order` module reproduces both so the
//! output order matches even where that comparator is not a total order.

mod list;
mod order;
mod save;

pub use list::{ListFormat, ListOptions, render_list};
pub use save::{SaveOptions, parse_rules, write_rules};

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// `inet_ntop(AF_INET6)` exactly as glibc formats it (RFC 5952 style, with glibc's
/// embedded-IPv4 forms `::a.b.c.d` and `::ffff:a.b.c.d`).
pub fn inet6_ntop(a: &Ipv6Addr) -> String {
    let w = a.segments();
    // Longest run of zero words, at least 2 long; first one wins ties.
    let (mut best_base, mut best_len) = (usize::MAX, 0usize);
    let mut i = 0;
    while i < 8 {
        if w[i] == 0 {
            let start = i;
            while i < 8 && w[i] == 0 {
                i += 1;
            }
            if i - start > best_len {
                best_base = start;
                best_len = i - start;
            }
        } else {
            i += 1;
        }
    }
    if best_len < 2 {
        best_base = usize::MAX;
    }
    let mut out = String::new();
    let mut i = 0;
    while i < 8 {
        if best_base != usize::MAX && i >= best_base && i < best_base + best_len {
            if i == best_base {
                out.push(':');
            }
            i += 1;
            continue;
        }
        if i != 0 {
            out.push(':');
        }
        if i == 6 && best_base == 0 && (best_len == 6 || (best_len == 5 && w[5] == 0xffff)) {
            let o = a.octets();
            out.push_str(&format!("{}.{}.{}.{}", o[12], o[13], o[14], o[15]));
            return out;
        }
        out.push_str(&format!("{:x}", w[i]));
        i += 1;
    }
    if best_base != usize::MAX && best_base + best_len == 8 {
        out.push(':');
    }
    out
}

/// `addr:port` as ipvsadm prints it numerically (`[v6]:port` for IPv6).
pub fn addrport(addr: &SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(v4) => format!("{}:{}", v4, addr.port()),
        IpAddr::V6(v6) => format!("[{}]:{}", inet6_ntop(&v6), addr.port()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntop_matches_glibc_forms() {
        let cases = [
            ("::1", "::1"),
            ("::", "::"),
            ("2001:db8::1", "2001:db8::1"),
            ("2001:db8:0:1:0:0:0:1", "2001:db8:0:1::1"),
            ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),
            ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"),
            ("::ffff:10.0.0.1", "::ffff:10.0.0.1"),
            ("::10.0.0.1", "::10.0.0.1"),
            ("fe80::1:0", "fe80::1:0"),
            ("1:2:3:4:5:6:7:0", "1:2:3:4:5:6:7:0"),
            ("1:2:3:4:5:6:0:0", "1:2:3:4:5:6::"),
        ];
        for (input, want) in cases {
            let a: Ipv6Addr = input.parse().unwrap();
            assert_eq!(inet6_ntop(&a), want, "{input}");
        }
    }
}
