//! The dirty bitmap: one bit per 4 KiB block of the data area.
//!
//! A set bit means "this block may differ from the peer and must be resynced". The engine sets
//! bits for writes the peer has not acknowledged and clears them when resync has copied the
//! block. Changes are tracked per 4 KiB on-disk page so write-out touches only what changed.

/// Bytes of data covered by one bit.
pub const BM_BLOCK_SIZE: u64 = 4096;
/// Bits stored in one 4 KiB on-disk bitmap page.
pub const BITS_PER_PAGE: u64 = 4096 * 8;

/// In-memory dirty bitmap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitmap {
    words: Vec<u64>,
    nbits: u64,
    /// On-disk pages changed since the last write-out.
    dirty_pages: Vec<bool>,
}

impl Bitmap {
    /// A clear bitmap of `nbits` bits.
    pub fn new(nbits: u64) -> Self {
        let words = nbits.div_ceil(64) as usize;
        Bitmap {
            words: vec![0; words],
            nbits,
            dirty_pages: vec![false; Self::pages_for(nbits) as usize],
        }
    }

    /// A bitmap covering `data_size` bytes.
    pub fn for_size(data_size: u64) -> Self {
        Self::new(data_size.div_ceil(BM_BLOCK_SIZE))
    }

    /// Number of on-disk pages needed for `nbits`.
    pub fn pages_for(nbits: u64) -> u64 {
        nbits.div_ceil(BITS_PER_PAGE).max(1)
    }

    /// Number of bits.
    pub fn len(&self) -> u64 {
        self.nbits
    }

    /// Whether the bitmap has zero bits.
    pub fn is_empty(&self) -> bool {
        self.nbits == 0
    }

    /// Value of bit `i` (false when out of range).
    pub fn get(&self, i: u64) -> bool {
        i < self.nbits && self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    fn touch_pages(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        for p in start / BITS_PER_PAGE..=(end - 1) / BITS_PER_PAGE {
            if let Some(d) = self.dirty_pages.get_mut(p as usize) {
                *d = true;
            }
        }
    }

    /// Set or clear bits `start..end` (clamped to the bitmap); returns how many bits changed.
    pub fn set_range(&mut self, start: u64, end: u64, value: bool) -> u64 {
        let end = end.min(self.nbits);
        if start >= end {
            return 0;
        }
        let mut changed = 0u64;
        let mut i = start;
        while i < end {
            let w = (i / 64) as usize;
            let lo = i % 64;
            let hi = (end - (i - lo)).min(64);
            let mask = if hi - lo == 64 {
                u64::MAX
            } else {
                ((1u64 << (hi - lo)) - 1) << lo
            };
            let old = self.words[w];
            let new = if value { old | mask } else { old & !mask };
            changed += u64::from((old ^ new).count_ones());
            self.words[w] = new;
            i = i - lo + hi;
        }
        if changed > 0 {
            self.touch_pages(start, end);
        }
        changed
    }

    /// Bits covering the byte range `offset..offset+len`.
    pub fn bits_for_bytes(offset: u64, len: u64) -> (u64, u64) {
        if len == 0 {
            return (0, 0);
        }
        (
            offset / BM_BLOCK_SIZE,
            (offset.saturating_add(len)).div_ceil(BM_BLOCK_SIZE),
        )
    }

    /// Mark every block touched by a byte range dirty; returns newly set bits.
    pub fn mark_bytes(&mut self, offset: u64, len: u64) -> u64 {
        let (s, e) = Self::bits_for_bytes(offset, len);
        self.set_range(s, e, true)
    }

    /// Set every bit.
    pub fn set_all(&mut self) {
        self.set_range(0, self.nbits, true);
    }

    /// Clear every bit.
    pub fn clear_all(&mut self) {
        self.set_range(0, self.nbits, false);
    }

    /// Number of set bits.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Number of set bits in `start..end`.
    pub fn count_range(&self, start: u64, end: u64) -> u64 {
        (start..end.min(self.nbits))
            .filter(|&i| self.get(i))
            .count() as u64
    }

    /// First set bit at or after `from`.
    pub fn next_set(&self, from: u64) -> Option<u64> {
        let mut i = from;
        while i < self.nbits {
            let w = self.words[(i / 64) as usize] >> (i % 64);
            if w == 0 {
                i = (i / 64 + 1) * 64;
                continue;
            }
            let found = i + u64::from(w.trailing_zeros());
            return (found < self.nbits).then_some(found);
        }
        None
    }

    /// OR another bitmap of the same length into this one.
    pub fn merge(&mut self, other: &Bitmap) {
        for (i, (a, b)) in self.words.iter_mut().zip(&other.words).enumerate() {
            if *a | *b != *a {
                *a |= *b;
                let p = (i as u64 * 64) / BITS_PER_PAGE;
                if let Some(d) = self.dirty_pages.get_mut(p as usize) {
                    *d = true;
                }
            }
        }
    }

    /// Encoded on-disk page `p` (4 KiB, little-endian words; bits past the end are zero).
    pub fn page_bytes(&self, p: u64) -> Vec<u8> {
        let mut out = vec![0u8; 4096];
        let first = (p * BITS_PER_PAGE / 64) as usize;
        for (j, chunk) in out.chunks_exact_mut(8).enumerate() {
            if let Some(w) = self.words.get(first + j) {
                chunk.copy_from_slice(&w.to_le_bytes());
            }
        }
        out
    }

    /// Load on-disk page `p` from its encoding (ignores bits past the end).
    pub fn load_page(&mut self, p: u64, bytes: &[u8]) {
        let first = (p * BITS_PER_PAGE / 64) as usize;
        for (j, chunk) in bytes.chunks_exact(8).enumerate() {
            if let Some(w) = self.words.get_mut(first + j) {
                let mut a = [0u8; 8];
                a.copy_from_slice(chunk);
                *w = u64::from_le_bytes(a);
            }
        }
        // Mask bits beyond nbits in the last word so counts stay exact.
        let tail = self.nbits % 64;
        if tail != 0
            && let Some(last) = self.words.last_mut()
        {
            *last &= (1u64 << tail) - 1;
        }
    }

    /// Encode the whole bitmap (all pages, concatenated).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for p in 0..Self::pages_for(self.nbits) {
            out.extend(self.page_bytes(p));
        }
        out
    }

    /// Decode a bitmap of `nbits` from [`Bitmap::to_bytes`] output (short input = zero bits).
    pub fn from_bytes(nbits: u64, bytes: &[u8]) -> Self {
        let mut bm = Bitmap::new(nbits);
        for (p, page) in bytes.chunks(4096).enumerate() {
            bm.load_page(p as u64, page);
        }
        bm
    }

    /// Take the list of pages changed since the last call.
    pub fn take_dirty_pages(&mut self) -> Vec<u64> {
        let mut out = Vec::new();
        for (i, d) in self.dirty_pages.iter_mut().enumerate() {
            if std::mem::take(d) {
                out.push(i as u64);
            }
        }
        out
    }

    /// Mark on-disk pages as needing write-out again.
    pub fn mark_pages_dirty(&mut self, pages: &[u64]) {
        for p in pages {
            if let Some(d) = self.dirty_pages.get_mut(*p as usize) {
                *d = true;
            }
        }
    }

    /// Pages covering bits `start..end`.
    pub fn pages_of(start: u64, end: u64) -> std::ops::Range<u64> {
        if start >= end {
            return 0..0;
        }
        start / BITS_PER_PAGE..(end - 1) / BITS_PER_PAGE + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ranges_match_model(nbits in 1u64..5000, ops in proptest::collection::vec((0u64..5200, 0u64..700, any::<bool>()), 0..40)) {
            let mut bm = Bitmap::new(nbits);
            let mut model = vec![false; nbits as usize];
            for (s, l, v) in ops {
                let e = s + l;
                let before = model.clone();
                for i in s..e.min(nbits) { model[i as usize] = v; }
                let changed = bm.set_range(s, e, v);
                let expect = before.iter().zip(&model).filter(|(a, b)| a != b).count() as u64;
                prop_assert_eq!(changed, expect);
            }
            for i in 0..nbits { prop_assert_eq!(bm.get(i), model[i as usize]); }
            prop_assert_eq!(bm.count(), model.iter().filter(|&&b| b).count() as u64);
            let first = model.iter().position(|&b| b).map(|p| p as u64);
            prop_assert_eq!(bm.next_set(0), first);
            let back = Bitmap::from_bytes(nbits, &bm.to_bytes());
            prop_assert_eq!(back.words, bm.words.clone());
            prop_assert_eq!(bm.count_range(0, nbits), bm.count());
        }

        #[test]
        fn mark_bytes_covers_range(off in 0u64..1_000_000, len in 1u64..100_000) {
            let mut bm = Bitmap::for_size(2_000_000);
            bm.mark_bytes(off, len);
            let (s, e) = Bitmap::bits_for_bytes(off, len);
            prop_assert!(s * BM_BLOCK_SIZE <= off && e * BM_BLOCK_SIZE >= off + len);
            prop_assert_eq!(bm.count(), e.min(bm.len()) - s);
        }
    }

    #[test]
    fn dirty_pages_tracked() {
        let mut bm = Bitmap::new(BITS_PER_PAGE * 3);
        bm.set_range(BITS_PER_PAGE + 5, BITS_PER_PAGE + 6, true);
        assert_eq!(bm.take_dirty_pages(), vec![1]);
        assert!(bm.take_dirty_pages().is_empty());
        let mut other = Bitmap::new(BITS_PER_PAGE * 3);
        other.set_range(2 * BITS_PER_PAGE, 2 * BITS_PER_PAGE + 1, true);
        bm.merge(&other);
        assert_eq!(bm.take_dirty_pages(), vec![2]);
        assert_eq!(bm.count(), 2);
    }
}
