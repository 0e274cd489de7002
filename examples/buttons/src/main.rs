//! `buttons-bot`: with no arguments the all-in-one; `buttons-bot worker`
//! beside the stock `ingress`; `buttons-bot queue ...` the operator commands.
fn main() -> std::process::ExitCode {
    allinone::run_from_env(buttons::bot())
}
