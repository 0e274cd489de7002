//! What a cluster node says about the cluster (`CLUSTER NODES`), and which
//! slot a key hashes to. Pure parsing, no I/O: the harness asks the nodes,
//! these functions read the answers.

/// Number of hash slots in every Redis Cluster.
pub const SLOTS: u16 = 16384;

/// One line of `CLUSTER NODES`, as seen by the node that was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's 40-character id.
    pub id: String,
    /// Its client port on 127.0.0.1 (0 for a node without an address).
    pub port: u16,
    /// `myself`, `master`, `slave`, `fail?`, `fail`, `noaddr`, ...
    pub flags: Vec<String>,
    /// The master's id, for a replica.
    pub master_id: Option<String>,
    /// Slot ranges it owns, inclusive; migrating/importing markers left out.
    pub slots: Vec<(u16, u16)>,
}

impl NodeInfo {
    pub fn is_master(&self) -> bool {
        self.has_flag("master")
    }

    pub fn is_replica(&self) -> bool {
        self.has_flag("slave")
    }

    /// Marked failed by the cluster (`fail`; a mere `fail?` suspicion is
    /// not a verdict yet).
    pub fn is_failed(&self) -> bool {
        self.has_flag("fail")
    }

    pub fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
    }

    /// Number of slots it owns.
    pub fn slot_count(&self) -> usize {
        self.slots
            .iter()
            .map(|&(a, b)| usize::from(b - a) + 1)
            .sum()
    }

    fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
}

/// Parses a `CLUSTER NODES` reply. Lines it cannot read are an error: a
/// harness that silently skipped them would answer "no master" instead of
/// showing the odd line.
pub fn parse_nodes(text: &str) -> Result<Vec<NodeInfo>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse_line(l).ok_or_else(|| format!("unreadable CLUSTER NODES line {l:?}")))
        .collect()
}

fn parse_line(line: &str) -> Option<NodeInfo> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 8 {
        return None;
    }
    // `ip:port@cport[,hostname]`
    let addr = f[1].split([',', '@']).next()?;
    let port = addr.rsplit_once(':')?.1.parse().ok()?;
    let mut slots = Vec::new();
    for s in &f[8..] {
        if s.starts_with('[') {
            continue;
        }
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        slots.push((a.parse().ok()?, b.parse().ok()?));
    }
    Some(NodeInfo {
        id: f[0].to_owned(),
        port,
        flags: f[2].split(',').map(str::to_owned).collect(),
        master_id: (f[3] != "-").then(|| f[3].to_owned()),
        slots,
    })
}

/// The port of the master owning `slot` in one node's view.
pub fn owner_of(view: &[NodeInfo], slot: u16) -> Option<u16> {
    view.iter()
        .find(|n| n.is_master() && n.owns(slot))
        .map(|n| n.port)
}

/// One node's place in a view: `(port, is master, its master's port,
/// slots)`.
pub type Role = (u16, bool, Option<u16>, Vec<(u16, u16)>);

/// Every node's role in a view, sorted by port: two nodes agree on the
/// cluster (who is master of which slots, who replicates whom) when these
/// are equal. Failure suspicions and link states are left out - they are
/// each node's own opinion.
pub fn roles(view: &[NodeInfo]) -> Vec<Role> {
    let port_of = |id: &String| view.iter().find(|n| &n.id == id).map(|n| n.port);
    let mut r: Vec<Role> = view
        .iter()
        .map(|n| {
            let mut slots = n.slots.clone();
            slots.sort_unstable();
            (
                n.port,
                n.is_master(),
                n.master_id.as_ref().and_then(port_of),
                slots,
            )
        })
        .collect();
    r.sort_unstable();
    r
}

/// The hash slot of `key` per the Redis Cluster spec: CRC16 (XMODEM) of
/// the hash tag - the part between the first `{` and the next `}` when it
/// is not empty - or of the whole key, modulo 16384.
pub fn slot_of(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16_xmodem(hashed) % SLOTS
}

fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_the_spec_check_value() {
        // The Redis Cluster spec's reference: CRC16 of "123456789" is 0x31C3.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
    }

    #[test]
    fn hash_tags_follow_the_spec() {
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"foo{}{bar}"), crc16_xmodem(b"foo{}{bar}") % SLOTS);
        assert_eq!(slot_of(b"foo{{bar}}zap"), slot_of(b"{bar"));
        assert_eq!(slot_of(b"foo{bar}{zap}"), slot_of(b"bar"));
        assert_eq!(slot_of(b"foo"), 12182);
    }

    #[test]
    fn reads_cluster_nodes_lines() {
        let text = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@40004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@40002,host2 master - 0 1426238316232 2 connected 5461-10922 [10923->-e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca]
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 10923
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@40005 master,fail - 1426238316232 0 5 disconnected
";
        let v = parse_nodes(text).unwrap();
        assert_eq!(v.len(), 4);
        assert!(v[0].is_replica());
        assert_eq!(v[0].master_id.as_deref(), Some(v[2].id.as_str()));
        assert_eq!(v[1].port, 30002);
        assert_eq!(v[1].slots, vec![(5461, 10922)]);
        assert_eq!(v[2].slots, vec![(0, 5460), (10923, 10923)]);
        assert_eq!(v[2].slot_count(), 5462);
        assert!(v[3].is_failed() && v[3].slots.is_empty());
        assert_eq!(owner_of(&v, 10923), Some(30001));
        assert_eq!(owner_of(&v, 16000), None);
        assert_eq!(
            roles(&v),
            vec![
                (30001, true, None, vec![(0, 5460), (10923, 10923)]),
                (30002, true, None, vec![(5461, 10922)]),
                (30004, false, Some(30001), vec![]),
                (30005, true, None, vec![]),
            ]
        );
        assert!(parse_nodes("garbage line").is_err());
    }
}
