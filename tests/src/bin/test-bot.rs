//! The shipped bot plus a payments handler: what the end-to-end tests of
//! deadlines run as their workers (a pre-checkout query answered `ok`,
//! beside `/stats`'s Refresh button).
use worker::{Ctx, HandlerError, Reply};

async fn pre_checkout(ctx: Ctx<shipped_bot::App>) -> Result<Reply, HandlerError> {
    let id = ctx.raw()["pre_checkout_query"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok(Reply::call(
        "answerPreCheckoutQuery",
        serde_json::json!({ "pre_checkout_query_id": id, "ok": true }),
    ))
}

fn main() -> std::process::ExitCode {
    shipped_bot::bot()
        .on("pre_checkout_query", pre_checkout)
        .run_from_env()
}
