//! hb-net (skeleton; being written).
