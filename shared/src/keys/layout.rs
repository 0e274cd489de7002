//! Hash tags for a Redis Cluster: which slot a key lands in, and the tag
//! of each shard's home.
//!
//! A cluster serves a script only if all its keys hash to one slot, and a
//! key's slot is the CRC16 of its hash tag - the part between the first
//! `{` and the next `}`. Every home's names start with one tag, so every
//! script (which touches one home) is single-slot. The tags are picked so
//! that shard `i` of `n` lands in the `i`-th `n`th of the slot space: a
//! cluster whose masters split the slots evenly (what `redis-cli --cluster
//! create` does) then gets one shard per master, not shards piled on one
//! master by the luck of the hash.

/// Slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// CRC16-XMODEM, the checksum Redis Cluster hashes keys with.
pub fn crc16(bytes: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(bytes)
}

/// The slot Redis Cluster puts `key` in (its hash tag's, if it has one).
pub fn slot_of(key: &str) -> u16 {
    let b = key.as_bytes();
    let tagged = b.iter().position(|&c| c == b'{').and_then(|open| {
        let len = b[open + 1..].iter().position(|&c| c == b'}')?;
        (len > 0).then(|| &b[open + 1..open + 1 + len])
    });
    crc16(tagged.unwrap_or(b)) % SLOTS
}

/// Shard `i`'s name start: `{<prefix><i>}`, or `{<prefix><i>.<k>}` with
/// the smallest `k` that puts it in its part of the slot space.
pub fn home(prefix: &str, i: u16, n: u16) -> String {
    let n = u32::from(n.max(1));
    let lo = u32::from(i) * u32::from(SLOTS) / n;
    let hi = (u32::from(i) + 1) * u32::from(SLOTS) / n;
    let fits = |tag: &str| (lo..hi).contains(&u32::from(slot_of(tag)));
    let first = format!("{{{prefix}{i}}}");
    if fits(&first) {
        return first;
    }
    // Each try lands in the range with probability 1/n: found within a
    // few n tries; the bound only keeps a wrong input from looping.
    (1..100_000u32)
        .map(|k| format!("{{{prefix}{i}.{k}}}"))
        .find(|t| fits(t))
        .unwrap_or(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_the_cluster_specification() {
        // Examples from the Redis Cluster specification and redis-cli
        // (`CLUSTER KEYSLOT`).
        assert_eq!(slot_of("123456789"), 12739);
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("{user1000}.following"), slot_of("user1000"));
        assert_eq!(slot_of("foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(slot_of("foo{{bar}}zap"), slot_of("{bar"));
    }

    #[test]
    fn shard_homes_fall_in_their_part_of_the_slots() {
        for n in [1u16, 2, 3, 4, 6] {
            for i in 0..n {
                let h = home("tgbot:", i, n);
                let slot = u32::from(slot_of(&format!("{h}updates")));
                let lo = u32::from(i) * 16384 / u32::from(n);
                let hi = (u32::from(i) + 1) * 16384 / u32::from(n);
                assert!(
                    (lo..hi).contains(&slot),
                    "{h}: slot {slot} not in {lo}..{hi}"
                );
            }
        }
        assert_eq!(home("tgbot:", 0, 1), "{tgbot:0}");
    }
}
