//! The harness itself: redis-server lifecycle and persistence. (No
//! workspace binaries needed.)

use e2e::harness::{RedisOptions, RedisServer};

#[tokio::test]
async fn redis_aof_survives_stop_kill_and_restart() {
    let Some(mut redis) = RedisServer::start_with(RedisOptions {
        aof: true,
        ..Default::default()
    })
    .await
    else {
        return;
    };
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    let mut c = redis.conn().await;
    let _: String = redis::cmd("SET")
        .arg("k")
        .arg("v1")
        .query_async(&mut c)
        .await
        .unwrap();

    redis.stop().await;
    assert!(!redis.is_running());
    assert!(
        redis::cmd("GET")
            .arg("k")
            .query_async::<Option<String>>(&mut c)
            .await
            .is_err(),
        "the server is down"
    );

    redis.restart().await;
    assert_eq!(redis.port(), port, "same port after restart");
    let mut c = redis.conn().await;
    let v: Option<String> = redis::cmd("GET")
        .arg("k")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("v1"), "AOF kept the value");

    // appendfsync always: even a SIGKILL right after the write keeps it.
    let _: String = redis::cmd("SET")
        .arg("k")
        .arg("v2")
        .query_async(&mut c)
        .await
        .unwrap();
    redis.kill();
    redis.restart().await;
    let mut c = redis.conn().await;
    let v: Option<String> = redis::cmd("GET")
        .arg("k")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("v2"));
}

#[tokio::test]
async fn redis_without_persistence_starts_empty_after_restart() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let mut c = redis.conn().await;
    let _: String = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut c)
        .await
        .unwrap();
    redis.restart().await;
    let mut c = redis.conn().await;
    let v: Option<String> = redis::cmd("GET")
        .arg("k")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(v, None);
}
