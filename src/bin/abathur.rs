//! The `abathur` executable: everything but the exit lives in [`abathur::cli`].

/// Out of memory is reported as a plain error, as every other failure is.
#[global_allocator]
static ALLOCATOR: abathur::cli::Allocator = abathur::cli::Allocator;

fn main() {
    std::process::exit(abathur::cli::main());
}
