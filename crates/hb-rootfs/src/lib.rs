//! hb-rootfs (skeleton; being written).
