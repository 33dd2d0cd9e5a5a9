//! The model of the in-memory queue (to be written).
