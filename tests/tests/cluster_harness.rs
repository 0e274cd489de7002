//! The Redis Cluster harness itself (`e2e::cluster`): a real cluster that
//! serves all slots, moves a slot under a running client, and fails a
//! crashed master over to its replica. (No workspace binaries needed.)

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use e2e::cluster::{ClusterOptions, RedisCluster, SLOTS};
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::AsyncCommands;

const KEYS_PER_TAG: usize = 20;
const STREAM_LEN: usize = 5;

async fn cluster_client(c: &RedisCluster) -> ClusterConnection {
    redis::cluster::ClusterClient::builder(vec![c.url()])
        .connection_timeout(Duration::from_secs(5))
        .response_timeout(Duration::from_secs(10))
        .build()
        .expect("cluster client")
        .get_async_connection()
        .await
        .expect("cluster connection")
}

/// One hash tag per master: `(tag, slot, master port)`.
async fn tag_per_master(c: &RedisCluster) -> Vec<(String, u16, u16)> {
    let masters = c.masters().await;
    let mut out: Vec<(String, u16, u16)> = Vec::new();
    for i in 0..10_000 {
        let tag = format!("chat{i}");
        let slot = RedisCluster::slot_of(&format!("{{{tag}}}"));
        let port = masters.iter().find(|m| m.owns(slot)).expect("owned").port;
        if !out.iter().any(|t| t.2 == port) {
            out.push((tag, slot, port));
        }
        if out.len() == masters.len() {
            return out;
        }
    }
    panic!("no tag for every master: {masters:#?}");
}

async fn write_tag(cc: &mut ClusterConnection, tag: &str) {
    for i in 0..KEYS_PER_TAG {
        let () = cc
            .set(format!("{{{tag}}}:k{i}"), format!("{tag}-{i}"))
            .await
            .unwrap_or_else(|e| panic!("SET {{{tag}}}:k{i}: {e}"));
    }
    for i in 0..STREAM_LEN {
        let _: String = cc
            .xadd(format!("{{{tag}}}:stream"), "*", &[("n", i)])
            .await
            .unwrap_or_else(|e| panic!("XADD {{{tag}}}:stream: {e}"));
    }
}

async fn check_tag(cc: &mut ClusterConnection, tag: &str) {
    for i in 0..KEYS_PER_TAG {
        let v: Option<String> = cc.get(format!("{{{tag}}}:k{i}")).await.unwrap();
        assert_eq!(v.as_deref(), Some(format!("{tag}-{i}").as_str()));
    }
    let len: usize = cc.xlen(format!("{{{tag}}}:stream")).await.unwrap();
    assert_eq!(len, STREAM_LEN, "stream of {tag}");
}

async fn keys_in_slot(conn: &mut MultiplexedConnection, slot: u16) -> usize {
    redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query_async(conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_serves_all_slots_and_moves_one_under_a_running_client() {
    let Some(c) = RedisCluster::start().await else {
        return;
    };
    let masters = c.masters().await;
    assert_eq!(masters.len(), 3, "{masters:#?}");
    assert_eq!(c.urls().len(), 3);
    let mut owners = vec![0u8; usize::from(SLOTS)];
    for m in &masters {
        assert!(m.slot_count() > 0, "{m:?} owns nothing");
        for &(a, b) in &m.slots {
            for s in a..=b {
                owners[usize::from(s)] += 1;
            }
        }
    }
    assert!(owners.iter().all(|&n| n == 1), "every slot owned once");

    // Slots as the server computes them.
    let mut n0 = c.node_conn(masters[0].port).await;
    for key in [
        "foo",
        "{user1000}.following",
        "foo{}{bar}",
        "foo{{bar}}zap",
        "ключ{чат}",
    ] {
        let server: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut n0)
            .await
            .unwrap();
        assert_eq!(RedisCluster::slot_of(key), server, "slot of {key:?}");
    }

    let tags = tag_per_master(&c).await;
    let mut cc = cluster_client(&c).await;
    for (tag, slot, port) in &tags {
        write_tag(&mut cc, tag).await;
        check_tag(&mut cc, tag).await;
        let mut node = c.node_conn(*port).await;
        assert_eq!(keys_in_slot(&mut node, *slot).await, KEYS_PER_TAG + 1);
        assert_eq!(c.master_of_slot(*slot).await, *port);
    }

    // A client keeps writing new keys of the moving slot meanwhile: during
    // the move they go to the target by ASK, after it by MOVED.
    let (tag, slot, from) = tags[0].clone();
    let to = tags[1].2;
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let writer = tokio::spawn({
        let (mut cc, stop, written, tag) = (cc.clone(), stop.clone(), written.clone(), tag.clone());
        async move {
            while !stop.load(Ordering::SeqCst) {
                let n = written.load(Ordering::SeqCst);
                let r: redis::RedisResult<()> = cc.set(format!("{{{tag}}}:live{n}"), n).await;
                r.map_err(|e| format!("live write {n}: {e}"))?;
                written.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok::<usize, String>(written.load(Ordering::SeqCst))
        }
    });
    let wait_writes = |at_least: usize| {
        let written = written.clone();
        async move {
            let ok = e2e::harness::eventually(Duration::from_secs(10), || {
                let n = written.load(Ordering::SeqCst);
                async move { n >= at_least }
            })
            .await;
            assert!(ok, "the live writer stalled before {at_least} writes");
        }
    };
    wait_writes(5).await;
    c.migrate_slot(slot, to).await;
    let after_move = written.load(Ordering::SeqCst);
    wait_writes(after_move + 5).await;
    stop.store(true, Ordering::SeqCst);
    let live = writer.await.unwrap().unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(c.master_of_slot(slot).await, to);
    let mut src = c.node_conn(from).await;
    let mut dst = c.node_conn(to).await;
    assert_eq!(keys_in_slot(&mut src, slot).await, 0, "keys left behind");
    assert_eq!(keys_in_slot(&mut dst, slot).await, KEYS_PER_TAG + 1 + live);
    let direct: redis::RedisResult<Option<String>> = src.get(format!("{{{tag}}}:k0")).await;
    let err = direct.expect_err("the old owner redirects");
    let target = format!("127.0.0.1:{to}");
    assert_eq!(err.code(), Some("MOVED"), "{err}");
    assert_eq!(err.redirect_node(), Some((target.as_str(), slot)), "{err}");
    // The same cluster connection follows the redirect.
    for (tag, _, _) in &tags {
        check_tag(&mut cc, tag).await;
    }
    for n in 0..live {
        let v: Option<usize> = cc.get(format!("{{{tag}}}:live{n}")).await.unwrap();
        assert_eq!(v, Some(n), "live write {n}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replica_takes_over_a_killed_master_and_the_old_one_rejoins() {
    let Some(mut c) = RedisCluster::start_with(ClusterOptions {
        replicas_per_master: 1,
        ..Default::default()
    })
    .await
    else {
        return;
    };
    assert_eq!(c.nodes().await.len(), 6);
    let masters = c.masters().await;
    assert_eq!(masters.len(), 3, "{masters:#?}");
    for m in &masters {
        assert_eq!(c.replicas_of(m.port).await.len(), 1, "replicas of {m:?}");
    }

    let tag = "failover";
    let slot = RedisCluster::slot_of(&format!("{{{tag}}}"));
    let old = c.master_of_slot(slot).await;
    let replica = c.replicas_of(old).await[0];
    let mut cc = cluster_client(&c).await;
    write_tag(&mut cc, tag).await;
    // WAIT counts the replicas that have this connection's last write, and
    // replication keeps order: once the fence is there, so is the rest.
    let mut direct = c.node_conn(old).await;
    let () = direct.set(format!("{{{tag}}}:fence"), 1).await.unwrap();
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query_async(&mut direct)
        .await
        .unwrap();
    assert_eq!(acked, 1, "the replica has the writes before the crash");

    assert_eq!(c.kill_master_of_slot(slot).await, old);
    let new = c.wait_failover(slot, Duration::from_secs(20)).await;
    assert_eq!(new, replica, "the killed master's replica took over");
    assert_eq!(c.master_of_slot(slot).await, new);
    assert!(!c.masters().await.iter().any(|m| m.port == old));

    // The connection made before the crash carries on.
    check_tag(&mut cc, tag).await;
    let () = cc.set(format!("{{{tag}}}:after"), "yes").await.unwrap();
    let mut on_new = c.node_conn(new).await;
    let v: Option<String> = on_new.get(format!("{{{tag}}}:after")).await.unwrap();
    assert_eq!(v.as_deref(), Some("yes"));

    c.restart_node(old).await;
    assert_eq!(
        c.replicas_of(new).await,
        vec![old],
        "the old master is back as a replica"
    );
    assert_eq!(c.master_of_slot(slot).await, new);
}
