//! The `plugd` command's subcommands that live outside `main.rs`.

pub mod pkg;
