//! The shipped bot in one process: ingress (or the poller) plus a worker,
//! over Redis when `REDIS_URL` is set, else the embedded queue.
fn main() -> std::process::ExitCode {
    allinone::run_from_env(shipped_bot::bot())
}
