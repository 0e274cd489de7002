//! Every text the bot sends, in one place, per language. Russian for users
//! whose client says `ru` (the original audience), English otherwise.
//! Command lists are never written here: they come from the registry
//! (`ctx.help_lines()`), so a new command shows up everywhere at once.

use worker::{BotStats, Ctx, UserRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Ru,
}

impl Lang {
    /// The language of the update's sender.
    pub fn of<S>(ctx: &Ctx<S>) -> Self {
        Self::from_code(ctx.language_code())
    }

    pub fn from_code(code: Option<&str>) -> Self {
        match code {
            Some(c)
                if c.eq_ignore_ascii_case("ru") || c.to_ascii_lowercase().starts_with("ru-") =>
            {
                Lang::Ru
            }
            _ => Lang::En,
        }
    }
}

fn date(ms: i64) -> String {
    // Civil date from days since the epoch (Howard Hinnant's algorithm):
    // avoids a date crate for one format.
    let days = ms.div_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}")
}

pub fn greeting(lang: Lang, first_name: &str, commands: &str) -> String {
    match lang {
        Lang::Ru => format!(
            "Привет, {first_name}! Я бот-пример с надёжной очередью обновлений.\n\n{commands}"
        ),
        Lang::En => format!(
            "Hello, {first_name}! I am a demo bot backed by a durable update queue.\n\n{commands}"
        ),
    }
}

pub fn welcome_back(lang: Lang, first_name: &str, first_seen_ms: i64, commands: &str) -> String {
    let since = date(first_seen_ms);
    match lang {
        Lang::Ru => format!("С возвращением, {first_name}! Мы знакомы с {since}.\n\n{commands}"),
        Lang::En => format!("Welcome back, {first_name}! We first met on {since}.\n\n{commands}"),
    }
}

pub fn help(lang: Lang, commands: &str) -> String {
    match lang {
        Lang::Ru => format!("Команды:\n{commands}"),
        Lang::En => format!("Commands:\n{commands}"),
    }
}

pub fn app_prompt(lang: Lang) -> &'static str {
    match lang {
        Lang::Ru => "Откройте мини-приложение:",
        Lang::En => "Open the Mini App:",
    }
}

pub fn app_button(lang: Lang) -> &'static str {
    match lang {
        Lang::Ru => "Открыть приложение",
        Lang::En => "Open app",
    }
}

pub fn app_in_group(lang: Lang) -> &'static str {
    match lang {
        Lang::Ru => "Мини-приложение открывается в личном чате с ботом:",
        Lang::En => "The Mini App opens in a private chat with the bot:",
    }
}

pub fn app_private_button(lang: Lang) -> &'static str {
    match lang {
        Lang::Ru => "Открыть в личном чате",
        Lang::En => "Open in private chat",
    }
}

pub fn refresh(lang: Lang) -> &'static str {
    match lang {
        Lang::Ru => "Обновить",
        Lang::En => "Refresh",
    }
}

/// What a user sees when the operator has not configured the Mini App:
/// no variable names (the operator's hint goes to the log).
pub fn app_not_configured(lang: Lang) -> &'static str {
    match lang {
        Lang::Ru => "Мини-приложение пока недоступно. Попробуйте позже.",
        Lang::En => "The Mini App is not available yet. Please try again later.",
    }
}

pub fn stats(lang: Lang, bot: &BotStats, me: Option<&UserRecord>) -> String {
    let mine = |lang| match (lang, me) {
        (Lang::Ru, Some(u)) => format!(
            "Вы с нами с {}, сообщений: {}",
            date(u.first_seen),
            u.messages
        ),
        (Lang::En, Some(u)) => format!(
            "You since {}, messages sent: {}",
            date(u.first_seen),
            u.messages
        ),
        (Lang::Ru, None) => "Вы здесь впервые.".to_string(),
        (Lang::En, None) => "This is your first visit.".to_string(),
    };
    match lang {
        Lang::Ru => format!(
            "Статистика бота:\nПользователей: {}\nНовых за 24 ч: {}\nАктивных за 24 ч: {}\nЗаблокировали бота: {}\nОбработано обновлений: {}\nВ очереди: {}\n\n{}",
            bot.users_total, bot.users_new_24h, bot.users_active_24h, bot.users_blocked, bot.updates_handled, bot.queue_depth, mine(lang)
        ),
        Lang::En => format!(
            "Bot statistics:\nUsers total: {}\nNew in 24 h: {}\nActive in 24 h: {}\nBlocked the bot: {}\nUpdates handled: {}\nQueue depth: {}\n\n{}",
            bot.users_total, bot.users_new_24h, bot.users_active_24h, bot.users_blocked, bot.updates_handled, bot.queue_depth, mine(lang)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_format() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(1_764_000_000_000), "2025-11-24");
        assert_eq!(date(951_782_400_000), "2000-02-29");
    }

    #[test]
    fn language_choice() {
        assert_eq!(Lang::from_code(Some("ru")), Lang::Ru);
        assert_eq!(Lang::from_code(Some("en")), Lang::En);
        assert_eq!(Lang::from_code(None), Lang::En);
        assert!(greeting(Lang::Ru, "Иван", "/help").contains("Привет"));
    }
}
