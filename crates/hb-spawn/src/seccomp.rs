//! Docker's default seccomp profile (skeleton; being written).
