//! hb-predict (skeleton; being written).
