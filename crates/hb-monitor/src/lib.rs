//! hb-monitor (skeleton; being written).
