//! The shipped bot's worker, deployed beside the stock `ingress`.
fn main() -> std::process::ExitCode {
    shipped_bot::bot().run_from_env()
}
