//! Every Lua script the system runs, one file each under `lua/`, loaded
//! here and nowhere else. A script is read from its own file so it can be
//! read (and its "free memory first" ordering checked) as Lua, not as a
//! Rust string; its comments say what it guarantees and which KEYS and
//! ARGV it takes. Every key a script touches comes in through KEYS, so
//! each one names its keys with the caller's `REDIS_KEY_PREFIX`. Lua that
//! two scripts share is a part under `lua/parts/`, put above each.

use std::sync::LazyLock;

use redis::Script;

pub struct Scripts {
    /// The ingress's store step, many updates per call
    /// (`lua/enqueue_many.lua`).
    pub enqueue_many: Script,
    /// One entry's completion (`lua/finish.lua`): for a shard outside the
    /// bot's home, after `apply.lua`; the bot's home ends its entries in
    /// batches (`end_many`).
    pub finish: Script,
    /// The bot's home's finishes and sent replies, many per call, and the
    /// sends budgeted meanwhile when the budget shares the home
    /// (`lua/end_many.lua`).
    pub end_many: Script,
    /// Its bot-wide half when its shard is elsewhere (`lua/apply.lua`).
    pub apply: Script,
    pub dead_letter: Script,
    pub reply_sent: Script,
    pub orphan_replies: Script,
    pub leave_group: Script,
    pub heal_head: Script,
    pub lease: Script,
    pub release: Script,
    /// The shared send budget, GCRA, many sends per call, where the budget
    /// lives apart from the bot's home (`lua/admit_many.lua`).
    pub admit_many: Script,
    /// A 429's pause, for a chat or the bot (`lua/rate_limited.lua`).
    pub rate_limited: Script,
    /// A reply put aside until due (`lua/delay_reply.lua`).
    pub delay_reply: Script,
    /// The app's own messages and broadcasts (`lua/outbox_put.lua`,
    /// `lua/broadcast_*.lua`).
    pub outbox_put: Script,
    pub broadcast_create: Script,
    pub broadcast_take: Script,
    pub broadcast_record: Script,
    pub broadcast_control: Script,
    /// `worker queue replay-dead` (`lua/replay_dead.lua`).
    pub replay_dead: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    enqueue_many: Script::new(include_str!("lua/enqueue_many.lua")),
    finish: with_parts(&[USER], include_str!("lua/finish.lua")),
    end_many: with_parts(&[BUDGET, USER], include_str!("lua/end_many.lua")),
    apply: with_parts(&[USER], include_str!("lua/apply.lua")),
    dead_letter: Script::new(include_str!("lua/dead_letter.lua")),
    reply_sent: Script::new(include_str!("lua/reply_sent.lua")),
    orphan_replies: Script::new(include_str!("lua/orphan_replies.lua")),
    leave_group: Script::new(include_str!("lua/leave_group.lua")),
    heal_head: Script::new(include_str!("lua/heal_head.lua")),
    lease: Script::new(include_str!("lua/lease.lua")),
    release: Script::new(include_str!("lua/release.lua")),
    admit_many: with_parts(&[BUDGET], include_str!("lua/admit_many.lua")),
    rate_limited: Script::new(include_str!("lua/rate_limited.lua")),
    delay_reply: Script::new(include_str!("lua/delay_reply.lua")),
    outbox_put: Script::new(include_str!("lua/outbox_put.lua")),
    broadcast_create: Script::new(include_str!("lua/broadcast_create.lua")),
    broadcast_take: Script::new(include_str!("lua/broadcast_take.lua")),
    broadcast_record: Script::new(include_str!("lua/broadcast_record.lua")),
    broadcast_control: Script::new(include_str!("lua/broadcast_control.lua")),
    replay_dead: Script::new(include_str!("lua/replay_dead.lua")),
});

/// The send budget (`admit_sends`), for the scripts that budget sends.
const BUDGET: &str = include_str!("lua/parts/budget.lua");
/// A user's directory record (`record_user`), for the scripts that finish.
const USER: &str = include_str!("lua/parts/user.lua");

/// A script with the parts it uses above its own Lua: each part is written
/// once, every script that needs it runs the same copy.
fn with_parts(parts: &[&str], script: &str) -> Script {
    let mut all = parts.concat();
    all.push_str(script);
    Script::new(&all)
}

/// The scripts, hashed once per process: invoking one sends its SHA
/// (EVALSHA) and its source only when Redis does not know it yet.
pub fn scripts() -> &'static Scripts {
    &SCRIPTS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each file is a script of its own (a mix-up of two `include_str!`
    /// would give two fields one hash).
    #[test]
    fn every_script_is_loaded_once_and_distinct() {
        let s = scripts();
        let all = [
            &s.enqueue_many,
            &s.finish,
            &s.end_many,
            &s.dead_letter,
            &s.reply_sent,
            &s.orphan_replies,
            &s.apply,
            &s.leave_group,
            &s.heal_head,
            &s.lease,
            &s.release,
            &s.admit_many,
            &s.rate_limited,
            &s.delay_reply,
            &s.outbox_put,
            &s.broadcast_create,
            &s.broadcast_take,
            &s.broadcast_record,
            &s.broadcast_control,
            &s.replay_dead,
        ];
        let hashes: std::collections::HashSet<&str> = all.iter().map(|s| s.get_hash()).collect();
        assert_eq!(hashes.len(), all.len());
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/queue/lua");
        let files = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter(|f| f.path().extension().is_some_and(|e| e == "lua"))
                    .count()
            })
            .unwrap_or(0);
        assert_eq!(files, all.len(), "every file under lua/ is loaded here");
    }
}
