//! hb-spawn (skeleton; being written).
