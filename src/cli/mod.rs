//! The `abathur` command.
