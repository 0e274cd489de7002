//! The shipped bot in one process: ingress (or the poller) plus a worker,
//! over Redis when `REDIS_URL` is set, else the embedded queue.
/// jemalloc: a profile of the worker under load showed a quarter of its
/// time in glibc's malloc and free; jemalloc cut its CPU per update by
/// about a sixth for under 1 MiB more peak RSS (README, Performance). One
/// arena (the services run one thread), no background purge thread.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] =
    b"narenas:1,background_thread:false,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> std::process::ExitCode {
    allinone::run_from_env(shipped_bot::bot())
}
