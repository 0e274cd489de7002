//! The shipped bot's worker, deployed beside the stock `ingress`.
/// mimalloc: the services allocate and free small buffers for every
/// update (requests, replies, Redis frames); glibc's allocator spent about
/// a seventh of a worker's CPU on that.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    shipped_bot::bot().run_from_env()
}
