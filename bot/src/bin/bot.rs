//! The shipped bot in one process: ingress (or the poller) plus a worker,
//! over Redis when `REDIS_URL` is set, else the embedded queue.
/// mimalloc: the services allocate and free small buffers for every
/// update (requests, replies, Redis frames); glibc's allocator spent about
/// a seventh of a worker's CPU on that.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    allinone::run_from_env(shipped_bot::bot())
}
