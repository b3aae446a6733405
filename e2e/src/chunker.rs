//! Chunkers: content-defined (Buzhash-style rolling hash, server/docs/formats.md#chunking) for
//! dynamic archives, and the fixed 4 MiB image chunker.
//!
//! The table is generated deterministically (not PBS's table): chunk boundaries need only
//! be stable and content-defined, not identical to the stock client's.

/// Fixed chunk size of `.img` archives (and of every server-written `.fidx`).
pub const FIXED_CHUNK_SIZE: usize = 4 * 1024 * 1024;
/// Average chunk size of pxar archives.
pub const ARCHIVE_AVG: usize = 4 * 1024 * 1024;
/// Average chunk size of the catalog.
pub const CATALOG_AVG: usize = 512 * 1024;
const WINDOW: usize = 64;

fn table() -> &'static [u32; 256] {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        core::array::from_fn(|_| {
            // splitmix64
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as u32
        })
    })
}

/// Streaming content-defined chunker: min = avg/4, max = avg*4, cut when
/// `(h & mask) >= mask - 2` with `mask = 2*avg - 1`.
#[derive(Debug, Clone)]
pub struct Chunker {
    min: usize,
    max: usize,
    mask: u32,
    h: u32,
    window: [u8; WINDOW],
    chunk_len: usize,
}

impl Chunker {
    /// `avg` must be a power of two ≥ 64 KiB (client `--chunk-size` range).
    pub fn new(avg: usize) -> Chunker {
        let avg = avg.clamp(64 * 1024, 4 * 1024 * 1024).next_power_of_two();
        Chunker {
            min: avg / 4,
            max: avg * 4,
            mask: (2 * avg - 1) as u32,
            h: 0,
            window: [0; WINDOW],
            chunk_len: 0,
        }
    }

    pub fn min_size(&self) -> usize {
        self.min
    }

    pub fn max_size(&self) -> usize {
        self.max
    }

    /// Starts a new chunk here (a boundary forced by the caller, e.g. before a reused chunk).
    pub fn reset(&mut self) {
        self.h = 0;
        self.chunk_len = 0;
    }

    /// Scans `data` (continuing the current chunk). Returns the number of bytes of `data`
    /// that complete the chunk (boundary after them), or 0 if no boundary was found; the
    /// state is reset after a boundary.
    pub fn scan(&mut self, data: &[u8]) -> usize {
        let t = table();
        for (i, &b) in data.iter().enumerate() {
            let slot = self.chunk_len % WINDOW;
            if self.chunk_len < WINDOW {
                self.h = self.h.rotate_left(1) ^ t[b as usize];
            } else {
                let out = self.window[slot];
                // rotation by 64 of the leaving byte vanishes for a 32-bit hash
                self.h = self.h.rotate_left(1) ^ t[out as usize] ^ t[b as usize];
            }
            self.window[slot] = b;
            self.chunk_len += 1;
            let cut = self.chunk_len >= self.max
                || (self.chunk_len >= self.min && (self.h & self.mask) >= self.mask - 2);
            if cut {
                self.h = 0;
                self.chunk_len = 0;
                return i + 1;
            }
        }
        0
    }

    /// Splits a whole buffer into chunk lengths.
    pub fn split(avg: usize, data: &[u8]) -> Vec<usize> {
        let mut c = Chunker::new(avg);
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            match c.scan(&data[pos..]) {
                0 => {
                    out.push(data.len() - pos);
                    break;
                }
                n => {
                    out.push(n);
                    pos += n;
                }
            }
        }
        out
    }
}

/// Fixed-size chunk lengths for an image of `len` bytes.
pub fn fixed_split(len: usize, chunk_size: usize) -> Vec<usize> {
    (0..len.div_ceil(chunk_size))
        .map(|i| chunk_size.min(len - i * chunk_size))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};

    fn random(len: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0u8; len];
        rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
        v
    }

    #[test]
    fn bounds_and_determinism() {
        let data = random(24 << 20, 1);
        let avg = CATALOG_AVG;
        let sizes = Chunker::split(avg, &data);
        assert_eq!(sizes.iter().sum::<usize>(), data.len());
        let (last, body) = sizes.split_last().unwrap();
        assert!(*last <= avg * 4);
        assert!(
            body.iter().all(|&s| s >= avg / 4 && s <= avg * 4),
            "{sizes:?}"
        );
        assert!(
            sizes.len() > 8,
            "expected content-defined cuts, got {sizes:?}"
        );
        assert_eq!(sizes, Chunker::split(avg, &data));
        // zeros never hit the hash rule: cuts at max
        let z = Chunker::split(ARCHIVE_AVG, &vec![0u8; 40 << 20]);
        assert_eq!(z, vec![16 << 20, 16 << 20, 8 << 20]);
    }

    #[test]
    fn boundaries_resync_after_insert() {
        let data = random(12 << 20, 2);
        let mut shifted = vec![0xAAu8; 1000];
        shifted.extend_from_slice(&data);
        let a = Chunker::split(CATALOG_AVG, &data);
        let b = Chunker::split(CATALOG_AVG, &shifted);
        let ends = |v: &[usize], off: usize| {
            let mut e = 0;
            v.iter()
                .map(|s| {
                    e += s;
                    e - off
                })
                .collect::<std::collections::HashSet<_>>()
        };
        let common = ends(&a, 0).intersection(&ends(&b, 1000)).count();
        assert!(common >= a.len() / 2, "{a:?} vs {b:?}");
    }

    #[test]
    fn fixed() {
        assert_eq!(fixed_split(10, 4), vec![4, 4, 2]);
        assert_eq!(fixed_split(8, 4), vec![4, 4]);
        assert!(fixed_split(0, 4).is_empty());
    }
}
