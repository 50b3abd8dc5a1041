//! ipvsadm's sort order: libipvs comparators and glibc's top-down merge sort.

use std::cmp::Ordering;
use std::net::{IpAddr, SocketAddr};

use crate::model::{Family, ServiceKey};

/// The address as the four big-endian words of a `union nf_inet_addr` (v4 in word 0).
fn words(ip: &IpAddr) -> [u32; 4] {
    match ip {
        IpAddr::V4(v4) => [u32::from(*v4), 0, 0, 0],
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let mut w = [0u32; 4];
            for (i, c) in o.chunks_exact(4).enumerate() {
                w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
            }
            w
        }
    }
}

/// `ntohl(a) - ntohl(b)` stored in an `int`, as the C code does.
fn csub(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

fn addr_cmp(v6: bool, a: &[u32; 4], b: &[u32; 4]) -> i32 {
    if v6 {
        let mut r = 0;
        for i in 0..4 {
            r = csub(a[i], b[i]);
            if r != 0 {
                break;
            }
        }
        r
    } else {
        csub(a[0], b[0])
    }
}

/// libipvs `ipvs_cmp_services`.
pub(crate) fn cmp_services(a: &ServiceKey, b: &ServiceKey) -> i32 {
    let parts = |k: &ServiceKey| -> (u32, i32, i32, [u32; 4], i32) {
        match k {
            ServiceKey::Addr { protocol, addr } => (
                0,
                i32::from(Family::of(&addr.ip()).af()),
                i32::from(protocol.number()),
                words(&addr.ip()),
                i32::from(addr.port()),
            ),
            ServiceKey::Fwmark { mark, family } => (*mark, i32::from(family.af()), 0, [0; 4], 0),
        }
    };
    let (fa, afa, pa, wa, pta) = parts(a);
    let (fb, afb, pb, wb, ptb) = parts(b);
    let r = csub(fa, fb);
    if r != 0 {
        return r;
    }
    if afa != afb {
        return afa - afb;
    }
    if pa != pb {
        return pa - pb;
    }
    let r = addr_cmp(afa == i32::from(Family::V6.af()), &wa, &wb);
    if r != 0 {
        return r;
    }
    pta - ptb
}

/// libipvs `ipvs_cmp_dests` (the first entry's family decides how addresses compare).
pub(crate) fn cmp_dests(a: &SocketAddr, b: &SocketAddr) -> i32 {
    let r = addr_cmp(a.is_ipv6(), &words(&a.ip()), &words(&b.ip()));
    if r != 0 {
        return r;
    }
    i32::from(a.port()) - i32::from(b.port())
}

/// glibc `msort`: stable top-down merge sort taking from the left run while `cmp <= 0`.
/// Never panics, whatever the comparator does.
pub(crate) fn msort_by<T: Clone>(v: &mut [T], cmp: &impl Fn(&T, &T) -> i32) {
    let n = v.len();
    if n <= 1 {
        return;
    }
    let n1 = n / 2;
    {
        let (l, r) = v.split_at_mut(n1);
        msort_by(l, cmp);
        msort_by(r, cmp);
    }
    let mut out = Vec::with_capacity(n);
    let (mut i, mut j) = (0, n1);
    while i < n1 && j < n {
        if cmp(&v[i], &v[j]) <= 0 {
            out.push(v[i].clone());
            i += 1;
        } else {
            out.push(v[j].clone());
            j += 1;
        }
    }
    out.extend_from_slice(&v[i..n1]);
    out.extend_from_slice(&v[j..n]);
    v.clone_from_slice(&out);
}

/// Convert a C comparator result to an [`Ordering`] (for callers that need one).
#[allow(dead_code)]
pub(crate) fn to_ordering(r: i32) -> Ordering {
    r.cmp(&0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_comparator_wraps_like_int_subtraction() {
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "192.168.0.1:80".parse().unwrap();
        // 0x0a000001 - 0xc0a80001 wraps to a positive int: ipvsadm lists 192.168.0.1 first.
        assert!(cmp_dests(&a, &b) > 0);
        let c: SocketAddr = "10.0.0.2:80".parse().unwrap();
        assert!(cmp_dests(&a, &c) < 0);
    }

    #[test]
    fn msort_is_stable_and_sorts() {
        let mut v = vec![(3, 'a'), (1, 'b'), (3, 'c'), (2, 'd'), (1, 'e')];
        msort_by(&mut v, &|a: &(i32, char), b: &(i32, char)| a.0 - b.0);
        assert_eq!(v, vec![(1, 'b'), (1, 'e'), (2, 'd'), (3, 'a'), (3, 'c')]);
    }
}
