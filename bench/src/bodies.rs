//! Realistic webhook bodies, fast: one JSON template per (user, command)
//! built with `e2e::updates::private_command` (plus the fields a real
//! private message also carries), split around `update_id`, so a request
//! body is two copies and a number.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;

use crate::load::BodyFn;

/// The command mix: half /start (records the user, greets), 30% /help,
/// 20% /stats (reads the bot-wide numbers). Every one gets one reply.
const COMMANDS: [(&str, u64); 3] = [("/start", 50), ("/help", 30), ("/stats", 20)];

const NAMES: [(&str, &str, &str); 8] = [
    ("Anna", "Schmidt", "en"),
    ("Дмитрий", "Иванов", "ru"),
    ("Lucas", "Martins", "en"),
    ("Екатерина", "Смирнова", "ru"),
    ("Sofia", "Rossi", "en"),
    ("Алексей", "Кузнецов", "ru"),
    ("Mei", "Tanaka", "en"),
    ("Ольга", "Попова", "ru"),
];

/// First user id; user `k` (and its private chat) is `FIRST_USER + k`.
pub const FIRST_USER: i64 = 300_000_000;

struct Template {
    head: Vec<u8>,
    tail: Vec<u8>,
}

pub struct Bodies {
    templates: Vec<Template>,
    chats: u64,
    next_update_id: AtomicI64,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl Bodies {
    /// Templates for `chats` private chats (one user each).
    pub fn new(chats: u64) -> Self {
        let chats = chats.max(1);
        let mut templates = Vec::with_capacity(chats as usize * COMMANDS.len());
        for k in 0..chats {
            let user_id = FIRST_USER + k as i64;
            let (first, last, lang) = NAMES[(k % NAMES.len() as u64) as usize];
            for (cmd, _) in COMMANDS {
                let text = if cmd == "/start" {
                    format!("/start ref_{:05}", k % 100_000)
                } else {
                    cmd.to_owned()
                };
                let mut u = e2e::updates::private_command(0, user_id, first, Some(lang), &text);
                let m = &mut u["message"];
                m["from"]["last_name"] = json!(last);
                m["from"]["is_premium"] = json!(k % 7 == 0);
                m["chat"]["last_name"] = json!(last);
                let s = u.to_string();
                let marker = "\"update_id\":0";
                let at = s.find(marker).expect("update_id in the template");
                templates.push(Template {
                    head: s.as_bytes()[..at + marker.len() - 1].to_vec(),
                    tail: s.as_bytes()[at + marker.len()..].to_vec(),
                });
            }
        }
        Self {
            templates,
            chats,
            next_update_id: AtomicI64::new(600_000_000),
        }
    }

    /// Body for request `i`: a pseudo-random chat and command, and an
    /// `update_id` never used before in this process.
    pub fn body(&self, i: u64) -> Bytes {
        let h = splitmix(i);
        let chat = h % self.chats;
        let roll = (h >> 32) % 100;
        let mut acc = 0;
        let mut cmd = 0;
        for (j, (_, share)) in COMMANDS.iter().enumerate() {
            acc += share;
            if roll < acc {
                cmd = j;
                break;
            }
        }
        let t = &self.templates[chat as usize * COMMANDS.len() + cmd];
        let id = self.next_update_id.fetch_add(1, Ordering::Relaxed);
        let id = id.to_string();
        let mut v = Vec::with_capacity(t.head.len() + id.len() + t.tail.len());
        v.extend_from_slice(&t.head);
        v.extend_from_slice(id.as_bytes());
        v.extend_from_slice(&t.tail);
        Bytes::from(v)
    }

    /// Smallest, mean and largest template size in bytes (with a 9-digit id).
    pub fn sizes(&self) -> (usize, usize, usize) {
        let lens: Vec<usize> = self
            .templates
            .iter()
            .map(|t| t.head.len() + t.tail.len() + 9)
            .collect();
        let min = lens.iter().copied().min().unwrap_or(0);
        let max = lens.iter().copied().max().unwrap_or(0);
        let mean = lens.iter().sum::<usize>() / lens.len().max(1);
        (min, mean, max)
    }

    pub fn into_body_fn(self: Arc<Self>) -> BodyFn {
        Arc::new(move |i| self.body(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_updates_with_fresh_ids() {
        let b = Bodies::new(50);
        let mut ids = std::collections::HashSet::new();
        let mut chats = std::collections::HashSet::new();
        for i in 0..500 {
            let v: serde_json::Value = serde_json::from_slice(&b.body(i)).expect("JSON");
            assert!(ids.insert(v["update_id"].as_i64().expect("update_id")));
            let chat = v["message"]["chat"]["id"].as_i64().expect("chat id");
            assert_eq!(chat, v["message"]["from"]["id"].as_i64().unwrap());
            chats.insert(chat);
            assert!(v["message"]["text"].as_str().unwrap().starts_with('/'));
        }
        assert!(chats.len() > 40, "spread over the chats: {}", chats.len());
        let (min, _, max) = b.sizes();
        assert!(min >= 350 && max <= 700, "{min}..{max}");
    }
}
