//! What `worker broadcast ...` prints: the human forms (counts in words,
//! times through [`crate::human`]) and the `--json` forms (raw numbers,
//! plus the Redis they came from, as `queue stats --json` has it).

use std::collections::VecDeque;
use std::fmt::Write;
use std::time::{Duration, Instant};

use serde::Serialize;

use shared::outbound::{BroadcastStatus, Control};

use crate::human;

/// A status as `--json` prints it.
#[derive(Serialize)]
pub struct StatusJson<'a> {
    /// Which Redis (password redacted): an unknown id in the wrong Redis
    /// looks like a lost broadcast.
    pub redis: &'a str,
    #[serde(flatten)]
    pub status: &'a BroadcastStatus,
    /// Recipients handled per second (recently when watching, else on
    /// average since it was created); `None` before there is a second to
    /// measure.
    pub rate_per_sec: Option<f64>,
    /// Time left at that rate, while it runs.
    pub eta_ms: Option<u64>,
}

impl<'a> StatusJson<'a> {
    pub fn new(redis: &'a str, status: &'a BroadcastStatus, rate: Option<f64>) -> Self {
        Self {
            redis,
            status,
            rate_per_sec: rate.map(|r| (r * 10.0).round() / 10.0),
            eta_ms: eta_ms(status, rate),
        }
    }
}

#[derive(Serialize)]
struct ListJson<'a> {
    redis: &'a str,
    broadcasts: &'a [BroadcastStatus],
}

/// Recipients whose send ended, one way or another.
pub fn handled(s: &BroadcastStatus) -> u64 {
    s.sent + s.failed + s.blocked
}

/// Whether the job will not change any more (sends in flight at a cancel
/// may still be counted, but nothing new starts).
pub fn ended(s: &BroadcastStatus) -> bool {
    matches!(s.state.as_str(), "done" | "cancelled")
}

/// The recent rate from successive looks at a job: what was handled in
/// the last [`Rate::WINDOW`], so a pause or a slow start long ago does not
/// skew the ETA.
#[derive(Default)]
pub struct Rate {
    samples: VecDeque<(Instant, u64)>,
}

impl Rate {
    const WINDOW: Duration = Duration::from_secs(10);

    pub fn observe(&mut self, at: Instant, handled: u64) {
        self.samples.push_back((at, handled));
        // Keep the newest sample at least a window old as the front.
        while self.samples.len() > 2 && self.samples[1].0 + Self::WINDOW <= at {
            self.samples.pop_front();
        }
    }

    /// Per second over the samples kept, once they span a second.
    pub fn per_sec(&self) -> Option<f64> {
        let (&(t0, h0), &(t1, h1)) = (self.samples.front()?, self.samples.back()?);
        let dt = t1.checked_duration_since(t0)?;
        (dt >= Duration::from_secs(1)).then(|| h1.saturating_sub(h0) as f64 / dt.as_secs_f64())
    }
}

/// The rate since the job was created (until it ended), when one look is
/// all there is.
pub fn average_rate(s: &BroadcastStatus, now_ms: i64) -> Option<f64> {
    let end = if s.finished_at_ms > 0 {
        s.finished_at_ms
    } else {
        now_ms
    };
    let took = end - s.created_at_ms;
    (s.created_at_ms > 0 && took >= 1000).then(|| handled(s) as f64 * 1000.0 / took as f64)
}

/// Time left at `rate`, for a job still sending.
pub fn eta_ms(s: &BroadcastStatus, rate: Option<f64>) -> Option<u64> {
    let rate = rate.filter(|r| *r > 0.0)?;
    (matches!(s.state.as_str(), "running" | "queued") && s.left > 0)
        .then(|| (s.left as f64 / rate * 1000.0).round() as u64)
}

fn percent(s: &BroadcastStatus) -> u64 {
    (handled(s).min(s.total) * 100)
        .checked_div(s.total)
        .unwrap_or(100)
}

fn rate_text(rate: Option<f64>) -> String {
    match rate {
        Some(r) if r < 100.0 => format!("{r:.1}/s"),
        Some(r) => format!("{r:.0}/s"),
        None => "-/s".to_owned(),
    }
}

fn eta_text(s: &BroadcastStatus, rate: Option<f64>) -> String {
    match (s.state.as_str(), eta_ms(s, rate)) {
        (_, Some(ms)) => format!("ETA {}", human::duration_ms(ms)),
        ("paused", _) => "paused".to_owned(),
        ("done", _) | ("cancelled", _) if s.finished_at_ms > s.created_at_ms => format!(
            "{} {} {}",
            s.state,
            if s.state == "done" { "in" } else { "after" },
            human::duration_ms((s.finished_at_ms - s.created_at_ms) as u64)
        ),
        ("done", _) | ("cancelled", _) => s.state.clone(),
        // Short: the live view's line must fit 80 columns to redraw.
        _ if rate == Some(0.0) => "stalled (workers running?)".to_owned(),
        _ => "ETA -".to_owned(),
    }
}

/// `sent 400  failed 2  blocked 10  left 588 of 1000`.
fn counts(s: &BroadcastStatus) -> String {
    format!(
        "sent {}  failed {}  blocked {}  left {} of {}",
        s.sent, s.failed, s.blocked, s.left, s.total
    )
}

/// One line for a log: `<time>  <id>  <state>  41%  <counts>  <rate>  <eta>`.
pub fn line(s: &BroadcastStatus, rate: Option<f64>, now_ms: i64) -> String {
    format!(
        "{}  {}  {}  {}%  {}  {}  {}",
        human::utc_ms(now_ms),
        s.id,
        s.state,
        percent(s),
        counts(s),
        rate_text(rate),
        eta_text(s, rate)
    )
}

/// The two lines of the live view, each short enough for 80 columns:
/// `running  [#########-----]  41%  35.2/s  ETA 17 s` and the counts.
pub fn bar(s: &BroadcastStatus, rate: Option<f64>) -> [String; 2] {
    const WIDTH: u64 = 25;
    let filled = (handled(s).min(s.total) * WIDTH)
        .checked_div(s.total)
        .unwrap_or(WIDTH);
    let bar: String = (0..WIDTH)
        .map(|i| if i < filled { '#' } else { '-' })
        .collect();
    [
        format!(
            "{:<9} [{bar}] {:>3}%  {}  {}",
            s.state,
            percent(s),
            rate_text(rate),
            eta_text(s, rate)
        ),
        counts(s),
    ]
}

/// `status` printed once: one field a line.
pub fn status(redis: &str, s: &BroadcastStatus, rate: Option<f64>, now_ms: i64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Broadcast: {}", s.id);
    let _ = writeln!(out, "Redis:     {redis}");
    let _ = writeln!(out, "State:     {}", s.state);
    let _ = writeln!(out, "Message:   {}", s.method);
    let _ = writeln!(
        out,
        "Created:   {} ({} ago)",
        human::utc_ms(s.created_at_ms),
        human::duration_ms((now_ms - s.created_at_ms).max(0) as u64)
    );
    let _ = writeln!(
        out,
        "Progress:  {} of {} handled ({}%)",
        handled(s),
        s.total,
        percent(s)
    );
    let _ = writeln!(out, "Sent:      {}", s.sent);
    let _ = writeln!(out, "Failed:    {}", s.failed);
    let _ = writeln!(
        out,
        "Blocked:   {} (blocked the bot: skipped from now on)",
        s.blocked
    );
    let _ = writeln!(out, "Left:      {}", s.left);
    let _ = writeln!(
        out,
        "Rate:      {} (average since created)",
        rate_text(rate)
    );
    let _ = writeln!(
        out,
        "ETA:       {}",
        eta_text(s, rate).trim_start_matches("ETA ")
    );
    out
}

fn json_of(redis: &str, s: &BroadcastStatus, rate: Option<f64>) -> String {
    serde_json::to_string_pretty(&StatusJson::new(redis, s, rate)).unwrap_or_default() + "\n"
}

/// What `send` prints once the job exists. `asked`: how many chat ids the
/// file had (duplicates and users who blocked the bot are left out).
pub fn created(redis: &str, s: &BroadcastStatus, asked: Option<usize>, json: bool) -> String {
    if json {
        return json_of(redis, s, None);
    }
    let mut out = format!(
        "Broadcast {} created in {redis}: {} to {} recipients",
        s.id, s.method, s.total
    );
    if let Some(skipped) = asked.and_then(|n| (n as u64).checked_sub(s.total)) {
        if skipped > 0 {
            let _ = write!(
                out,
                " ({skipped} of the file's {} left out: duplicates or blocked the bot)",
                asked.unwrap_or_default()
            );
        }
    }
    out.push_str(".\n");
    if s.total == 0 {
        out.push_str("Nobody to send it to: it is done already.\n");
    } else {
        let _ = writeln!(
            out,
            "The workers send it as the budget allows. Watch it: worker broadcast status {}",
            s.id
        );
    }
    out
}

/// What `pause`, `resume` and `cancel` print: the state after, and why it
/// is not the one asked for when it is not.
pub fn controlled(redis: &str, s: &BroadcastStatus, asked: Control, json: bool) -> String {
    if json {
        return json_of(redis, s, None);
    }
    let (wanted, verb) = match asked {
        Control::Pause => ("paused", "pause"),
        Control::Resume => ("running", "resume"),
        Control::Cancel => ("cancelled", "cancel"),
    };
    let head = if s.state == wanted {
        match asked {
            Control::Pause => format!(
                "Broadcast {} paused; `worker broadcast resume {}` continues it.",
                s.id, s.id
            ),
            Control::Resume => format!("Broadcast {} running again.", s.id),
            Control::Cancel => format!(
                "Broadcast {} cancelled: the {} recipients not reached get nothing.",
                s.id,
                s.total.saturating_sub(handled(s))
            ),
        }
    } else {
        format!(
            "Broadcast {} is {}: nothing to {verb}{}.",
            s.id,
            s.state,
            if asked == Control::Resume {
                " (only a paused broadcast resumes)"
            } else {
                ""
            }
        )
    };
    format!("{head}\n{}: {}\n", s.state, counts(s))
}

/// `list`: a table, newest first.
pub fn list(redis: &str, list: &[BroadcastStatus], json: bool) -> String {
    if json {
        let v = ListJson {
            redis,
            broadcasts: list,
        };
        return serde_json::to_string_pretty(&v).unwrap_or_default() + "\n";
    }
    if list.is_empty() {
        return format!("No broadcasts in {redis}.\n");
    }
    let mut out = format!("Redis: {redis}\n");
    let _ = writeln!(
        out,
        "{:<20} {:<10} {:<14} {:>8} {:>8} {:>7} {:>8} {:>8}  CREATED",
        "ID", "STATE", "MESSAGE", "TOTAL", "SENT", "FAILED", "BLOCKED", "LEFT"
    );
    for s in list {
        let _ = writeln!(
            out,
            "{:<20} {:<10} {:<14} {:>8} {:>8} {:>7} {:>8} {:>8}  {}",
            s.id,
            s.state,
            s.method,
            s.total,
            s.sent,
            s.failed,
            s.blocked,
            s.left,
            human::utc_ms(s.created_at_ms)
        );
    }
    out
}
