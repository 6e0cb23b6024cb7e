//! The partition librdkafka's partitioner would pick for a keyed record, computed in the host.
//!
//! A fused stage (see `stage::fusion`) must know the partition of a record before it is sent:
//! the record's id goes into the fused stage's processed-id topic, partition for partition, in
//! the same transaction. The host therefore sets the partition itself, the way the producer's
//! configured `partitioner` would (so the key → partition mapping stays what it was):
//! `consistent_random` (librdkafka's default) and `consistent` take the CRC-32 of the key,
//! `murmur2_random` and `murmur2` the Java client's murmur2, `fnv1a_random` and `fnv1a` FNV-1a.
//! Where librdkafka would pick a random partition (no key, an empty key with the `*_random`
//! CRC-32 variant, or the `random` partitioner), any partition is right; the host picks one from
//! the record's id so that a record handled again lands where it landed before.

/// How a producer maps keys to partitions (librdkafka's `partitioner` property).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioner {
    /// `consistent_random` (the default) or `consistent`: CRC-32 of the key.
    Crc32 {
        /// Whether an empty or missing key goes to a random partition (`consistent_random`).
        random_without_key: bool,
    },
    /// `murmur2_random` or `murmur2`: the Java client's partitioner.
    Murmur2,
    /// `fnv1a_random` or `fnv1a`.
    Fnv1a,
    /// `random`: any partition.
    Random,
}

impl Default for Partitioner {
    fn default() -> Self {
        Partitioner::Crc32 {
            random_without_key: true,
        }
    }
}

impl Partitioner {
    /// The partitioner a producer with `partitioner = name` uses; `None` for a name the host
    /// does not know (it then does not fuse stages, since it cannot tell where records land).
    pub fn named(name: Option<&str>) -> Option<Self> {
        Some(match name.unwrap_or("consistent_random") {
            "consistent_random" => Partitioner::Crc32 {
                random_without_key: true,
            },
            "consistent" => Partitioner::Crc32 {
                random_without_key: false,
            },
            "murmur2_random" | "murmur2" => Partitioner::Murmur2,
            "fnv1a_random" | "fnv1a" => Partitioner::Fnv1a,
            "random" => Partitioner::Random,
            _ => return None,
        })
    }

    /// The partition (of `partitions`) for a record with `key` and event id `id`.
    pub fn partition(&self, key: Option<&str>, id: &str, partitions: i32) -> i32 {
        let partitions = partitions.max(1) as u32;
        let any = || (crc32(id.as_bytes()) % partitions) as i32;
        match (self, key) {
            (Partitioner::Random, _) | (_, None) => any(),
            (Partitioner::Crc32 { random_without_key }, Some(key)) => {
                if key.is_empty() && *random_without_key {
                    any()
                } else {
                    (crc32(key.as_bytes()) % partitions) as i32
                }
            }
            (Partitioner::Murmur2, Some(key)) => {
                ((murmur2(key.as_bytes()) & 0x7fff_ffff) % partitions) as i32
            }
            (Partitioner::Fnv1a, Some(key)) => (fnv1a(key.as_bytes()) % partitions) as i32,
        }
    }
}

/// CRC-32 (ISO-HDLC, the zlib one librdkafka's `rd_crc32` computes).
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut n = 0;
        while n < 256 {
            let mut c = n as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[n] = c;
            n += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |crc, &byte| {
        TABLE[((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8)
    })
}

/// The Java client's murmur2 (seed `0x9747b28c`), as librdkafka's `rd_murmur2`.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// FNV-1a (32 bits), as librdkafka's `rd_fnv1a`.
fn fnv1a(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5u32, |hash, &byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_the_zlib_one() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn murmur2_matches_the_java_client() {
        // Values of org.apache.kafka.common.utils.Utils.murmur2 (see its tests).
        assert_eq!(murmur2(b"21") as i32, -973_932_308);
        assert_eq!(murmur2(b"foobar") as i32, -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985_981_536);
        assert_eq!(
            murmur2(b"a-little-bit-longer-string") as i32,
            -1_486_304_829
        );
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58_897_971
        );
        assert_eq!(murmur2(b"abc") as i32, 479_470_107);
    }

    #[test]
    fn fnv1a_is_the_32_bit_one() {
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
    }

    #[test]
    fn keys_map_like_librdkafka_and_keyless_records_by_their_id() {
        let default = Partitioner::default();
        assert_eq!(
            default.partition(Some("123456789"), "id", 3),
            (0xCBF4_3926u32 % 3) as i32
        );
        let keyless = default.partition(None, "some-id", 3);
        assert_eq!(keyless, default.partition(None, "some-id", 3));
        assert!((0..3).contains(&keyless));
        assert_eq!(
            default.partition(Some(""), "x", 7),
            default.partition(None, "x", 7)
        );
        let consistent = Partitioner::named(Some("consistent")).unwrap();
        assert_eq!(
            consistent.partition(Some(""), "x", 7),
            0,
            "crc32 of nothing is 0"
        );
        assert_eq!(Partitioner::named(Some("sticky-whatever")), None);
        assert_eq!(Partitioner::named(None), Some(Partitioner::default()));
    }
}
