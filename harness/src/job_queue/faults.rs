//! Level 5: worker processes killed mid-job, the server restarted with AOF (to be written).
