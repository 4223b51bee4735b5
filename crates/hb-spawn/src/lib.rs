//! hb-spawn (skeleton; being written).

pub mod seccomp;
