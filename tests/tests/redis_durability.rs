//! The ingress tells the operator, once Redis answers, which Redis settings
//! can lose updates it already answered 200 for: AOF off, or an eviction
//! policy under a memory limit. Silence would let a team believe the queue
//! is durable while Redis is not.

use std::time::Duration;

use e2e::harness::eventually;
use e2e::stack::Stack;

const AOF_OFF: &str = "Redis runs without AOF";
const EVICT_ANY: &str = "Redis may evict any key";
const EVICT_TTL: &str = "Redis may evict keys with a TTL";
const ALL_GOOD: &str = "Redis durability: AOF on, no eviction";

/// Waits for one of the report's lines in the ingress log, then returns
/// the whole log.
async fn report(s: &Stack) -> String {
    let seen = eventually(Duration::from_secs(20), || async {
        let logs = s.ingress().logs();
        [AOF_OFF, EVICT_ANY, EVICT_TTL, ALL_GOOD]
            .iter()
            .any(|l| logs.contains(l))
    })
    .await;
    let logs = s.ingress().logs();
    assert!(seen, "no durability report in the ingress log:\n{logs}");
    logs
}

#[tokio::test(flavor = "multi_thread")]
async fn aof_off_is_reported() {
    let Some(s) = Stack::builder().workers(0).start().await else {
        return;
    };
    let logs = report(&s).await;
    assert!(logs.contains(AOF_OFF), "{logs}");
    assert!(!logs.contains(ALL_GOOD), "{logs}");
    assert!(
        !logs.contains(EVICT_ANY) && !logs.contains(EVICT_TTL),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn eviction_under_a_memory_limit_is_reported() {
    let Some(s) = Stack::builder()
        .workers(0)
        .redis_aof()
        .redis_args(&["--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru"])
        .start()
        .await
    else {
        return;
    };
    let logs = report(&s).await;
    assert!(logs.contains(EVICT_ANY), "{logs}");
    assert!(logs.contains("allkeys-lru"), "{logs}");
    assert!(!logs.contains(AOF_OFF), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn aof_and_noeviction_are_reported_as_durable() {
    let Some(s) = Stack::builder()
        .workers(0)
        .redis_aof()
        .redis_args(&["--maxmemory", "100mb", "--maxmemory-policy", "noeviction"])
        .start()
        .await
    else {
        return;
    };
    let logs = report(&s).await;
    assert!(logs.contains(ALL_GOOD), "{logs}");
    assert!(
        !logs.contains(AOF_OFF) && !logs.contains(EVICT_ANY),
        "{logs}"
    );
}
