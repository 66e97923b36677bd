//! Whole-cluster restore: the plan (pure, printed by `hopsdrctl restore plan`) and, next, the
//! persisted state machine that executes it step by step, resumable after a crash.

pub mod exec;
pub mod plan;
pub mod target;
pub mod tarout;
