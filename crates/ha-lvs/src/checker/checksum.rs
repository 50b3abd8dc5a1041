//! The RFC 1071 Internet checksum, shared by the ICMP echo codec and the TCP SYN builder.

/// One's-complement sum of `data` (as big-endian 16-bit words, an odd last byte padded with
/// zero) added to `acc`, folded and complemented. `acc` carries a pseudo-header's sum.
pub(crate) fn internet_checksum(acc: u32, data: &[u8]) -> u16 {
    let mut sum = acc;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u32::from(u16::from_be_bytes([*last, 0]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}
