//! The send budget is the bot's, not the process's: several workers share
//! `TELEGRAM_SEND_RATE` through Redis, and a group gets at most 20 messages
//! a minute. Checked on the fake Bot API's own arrival times.

use std::time::Duration;

use e2e::stack::Stack;
use e2e::updates::{group_command, next_update_id, private_command};

const T: Duration = Duration::from_secs(60);

/// Most arrivals in any window of `window` length.
fn max_in_window(mut times: Vec<Duration>, window: Duration) -> usize {
    times.sort();
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

#[tokio::test(flavor = "multi_thread")]
async fn three_workers_share_one_bot_wide_rate() {
    const RATE: usize = 20;
    const N: usize = 120;
    let Some(s) = Stack::builder()
        .workers(3)
        .worker_env("TELEGRAM_SEND_RATE", &RATE.to_string())
        .start()
        .await
    else {
        return;
    };
    for i in 0..N {
        s.post_ok(&private_command(
            next_update_id(),
            730_000 + i as i64,
            "Rate",
            Some("en"),
            "/help",
        ))
        .await;
    }
    assert!(s.api.wait_for_sent(N, T).await, "{}", s.logs_tail());
    let sends: Vec<_> = s
        .api
        .calls_to("sendMessage")
        .into_iter()
        .filter(|c| c.status == 200)
        .collect();
    assert_eq!(sends.len(), N, "every update answered once");
    let first = sends.iter().map(|c| c.at).min().unwrap();
    let times: Vec<Duration> = sends.iter().map(|c| c.at - first).collect();
    let peak = max_in_window(times.clone(), Duration::from_secs(1));
    // GCRA: the steady rate plus a burst of 5, whatever the worker count.
    eprintln!(
        "BUDGET 3 workers, rate {RATE}/s: {N} replies, peak {peak} in any 1 s window, span {:?}",
        times.iter().max().unwrap()
    );
    assert!(
        peak <= RATE + 5 + 1,
        "peak {peak}/s over a budget of {RATE}/s"
    );
    // And the budget is used, not just respected: N at RATE/s takes about
    // N/RATE seconds (a lower bound only; no upper timing assertion).
    assert!(*times.iter().max().unwrap() >= Duration::from_secs((N / RATE) as u64 - 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_gets_at_most_twenty_a_minute() {
    let Some(s) = Stack::builder()
        .workers(2)
        .worker_env("TELEGRAM_SEND_RATE", "30")
        .start()
        .await
    else {
        return;
    };
    let chat = -100_777_000_i64;
    for i in 0..5 {
        s.post_ok(&group_command(
            next_update_id(),
            chat,
            740_000 + i,
            "Grp",
            Some("en"),
            "/help",
        ))
        .await;
    }
    assert!(s.api.wait_for_sent(5, T).await, "{}", s.logs_tail());
    let mut at: Vec<_> = s
        .api
        .calls_to("sendMessage")
        .into_iter()
        .filter(|c| c.status == 200)
        .map(|c| c.at)
        .collect();
    at.sort();
    // Burst of 3, then one per 3.5 s: 3 + 60/3.5 < 20 in any minute.
    let fourth = at[3] - at[0];
    let fifth = at[4] - at[0];
    eprintln!("BUDGET group: 4th reply after {fourth:?}, 5th after {fifth:?}");
    assert!(
        fourth >= Duration::from_millis(3_300),
        "4th group reply after {fourth:?}"
    );
    assert!(
        fifth >= Duration::from_millis(6_800),
        "5th group reply after {fifth:?}"
    );
}
