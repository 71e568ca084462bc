//! The `abathur` executable: everything but the exit lives in [`abathur::cli`].

fn main() {
    std::process::exit(abathur::cli::main());
}
