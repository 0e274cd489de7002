//! `worker broadcast status`: on a terminal a progress bar redrawn until
//! the job ends or Ctrl-C; into a pipe or a file, plain lines (once, or
//! every few seconds with `--follow`) that a log or a script can read -
//! no escape sequences where nobody sees them drawn.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use shared::envelope::now_ms;
use shared::outbound::BroadcastStatus;

use super::view::{self, Rate, StatusJson};
use super::{BroadcastCliError, Target};
use crate::human;

/// How often the live view asks Redis: often enough to look alive, one
/// small HGETALL each time.
const REDRAW: Duration = Duration::from_millis(500);

/// How often `--follow` prints a line: a log of a long broadcast stays
/// readable.
const FOLLOW_EVERY: Duration = Duration::from_secs(2);

pub async fn watch(
    target: &Target,
    id: &str,
    json: bool,
    follow: bool,
) -> Result<(), BroadcastCliError> {
    let first = target.status(id).await?;
    if !json && std::io::stdout().is_terminal() {
        return live(target, first).await;
    }
    if !follow {
        let rate = view::average_rate(&first, now_ms());
        if json {
            let v = StatusJson::new(&target.redis, &first, rate);
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        } else {
            print!("{}", view::status(&target.redis, &first, rate, now_ms()));
        }
        return Ok(());
    }
    let mut rate = Rate::default();
    let mut s = first;
    loop {
        rate.observe(Instant::now(), view::handled(&s));
        let r = rate.per_sec().or_else(|| view::average_rate(&s, now_ms()));
        if json {
            let v = StatusJson::new(&target.redis, &s, r);
            println!("{}", serde_json::to_string(&v).unwrap_or_default());
        } else {
            println!("{}", view::line(&s, r, now_ms()));
        }
        if view::ended(&s) {
            return Ok(());
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
        s = next(target, id, s, |e| {
            shared::telemetry::print_line(&format!("worker broadcast: {e}; trying again"))
        })
        .await?;
    }
}

/// The job's status now; a Redis error is reported through `report` and
/// the last status kept (a blip must not end a watch of an hour-long
/// broadcast). An id gone meanwhile ends it.
async fn next(
    target: &Target,
    id: &str,
    last: BroadcastStatus,
    report: impl FnOnce(&BroadcastCliError),
) -> Result<BroadcastStatus, BroadcastCliError> {
    match target.status(id).await {
        Ok(s) => Ok(s),
        Err(e @ BroadcastCliError::Store { .. }) => {
            report(&e);
            Ok(last)
        }
        Err(e) => Err(e),
    }
}

/// The progress bar: a header once, then two lines redrawn in place.
async fn live(target: &Target, mut s: BroadcastStatus) -> Result<(), BroadcastCliError> {
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "Broadcast {} ({} to {} recipients, created {}) in {}\nCtrl-C stops watching; the broadcast goes on.",
        s.id,
        s.method,
        s.total,
        human::utc_ms(s.created_at_ms),
        target.redis
    );
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut rate = Rate::default();
    let mut drawn = false;
    let mut trouble: Option<String> = None;
    loop {
        rate.observe(Instant::now(), view::handled(&s));
        let r = rate.per_sec().or_else(|| view::average_rate(&s, now_ms()));
        let [top, mut bottom] = view::bar(&s, r);
        if let Some(t) = trouble.take() {
            bottom = format!("{bottom}  ({t}; trying again)");
        }
        // Up to the first line of the last drawing, clear and redraw both;
        // the cursor stays at the end of the second.
        let up = if drawn { "\x1b[1A\r" } else { "" };
        let _ = write!(out, "{up}\x1b[2K{top}\n\x1b[2K{bottom}");
        let _ = out.flush();
        drawn = true;
        if view::ended(&s) {
            let _ = writeln!(out);
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(REDRAW) => {}
            _ = &mut interrupted => {
                let _ = writeln!(
                    out,
                    "\nStopped watching; broadcast {} goes on (`worker broadcast pause {}` pauses it).",
                    s.id, s.id
                );
                return Ok(());
            }
        }
        let id = s.id.clone();
        s = next(target, &id, s, |e| trouble = Some(e.to_string())).await?;
    }
}
