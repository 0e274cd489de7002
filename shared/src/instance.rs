//! One identity per process, for everything that must tell replicas apart:
//! consumer names, the poller's lease, the webhook and menu locks.
//!
//! A process id alone is `1` in every container, so two replicas holding
//! "the same" lock would each think it was theirs. The identity is the
//! host's (Railway's replica id, else the hostname), the process id (which
//! tells processes on one host apart and lets tests find a process's
//! consumer) and a random suffix (which tells restarts apart).

use std::fmt;
use std::sync::Arc;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Instance(Arc<str>);

impl Instance {
    /// A fresh identity for this process.
    pub fn new() -> Self {
        let host = std::env::var("RAILWAY_REPLICA_ID")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "local".into());
        let id = uuid::Uuid::new_v4().simple().to_string();
        Self(format!("{host}-{}-{}", std::process::id(), &id[..8]).into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Instance {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Instance({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_differ_and_carry_the_pid() {
        let (a, b) = (Instance::new(), Instance::new());
        assert_ne!(a, b);
        assert!(a.as_str().contains(&format!("-{}-", std::process::id())));
    }
}
