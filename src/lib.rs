//! hopsdr: disaster recovery for Hopsworks clusters.
//!
//! The library behind `hopsdrd` (the daemon) and `hopsdrctl` (its command-line client). The map of
//! the parts and the direction of their arrows is in `ARCHITECTURE.md`: the API and the
//! scheduler ask the job runner; jobs use the cluster, the repository and the catalog; nothing
//! below the job runner knows about HTTP, cron or systemd.

pub mod agent;
pub mod agents;
pub mod api;
pub mod backup;
pub mod catalog;
pub mod cluster;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod domain;
pub mod drill;
pub mod failpoint;
pub mod hooks;
pub mod ids;
pub mod logging;
pub mod pacer;
pub mod placement;
pub mod rebuild;
pub mod repository;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod timetable;
