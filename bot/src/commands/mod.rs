//! One file per command. Each has its handler and a `register` that adds
//! it to the bot (name, description per language, handler - and any button
//! handler it needs), so adding a command is one new file plus its name in
//! the list below. The list's order is the menu's and `/help`'s.

use worker::Bot;

use crate::App;

macro_rules! commands {
    ($($name:ident),* $(,)?) => {
        $(pub mod $name;)*

        /// Registers every command, in menu order.
        pub fn register(bot: Bot<App>) -> Bot<App> {
            $(let bot = $name::register(bot);)*
            bot
        }
    };
}

commands![start, app, stats, help];
