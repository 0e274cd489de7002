//! `echo-bot`: with no arguments the all-in-one (polling or webhook, Redis
//! or the embedded queue); `echo-bot worker` beside the stock `ingress`;
//! `echo-bot queue ...` the operator commands.
fn main() -> std::process::ExitCode {
    allinone::run_from_env(echo::bot())
}
