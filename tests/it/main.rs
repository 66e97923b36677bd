//! Integration tests: one test binary, real processes (hopsdrd, hopsdrctl, promtool, setpriv),
//! real sockets, every test in its own temp dir.

mod harness;

mod agents;
mod api;
mod backup;
mod check_config;
#[cfg(feature = "testbed")]
mod cloud;
#[cfg(feature = "testbed")]
mod copy;
#[cfg(feature = "testbed")]
mod crash;
#[cfg(feature = "testbed")]
mod drill;
#[cfg(feature = "testbed")]
mod encryption;
mod faults;
#[cfg(feature = "testbed")]
mod hopsfs;
#[cfg(feature = "testbed")]
mod hopsworks;
mod lifecycle;
mod listeners;
mod moto;
mod mysql;
#[cfg(feature = "testbed")]
mod netns;
#[cfg(feature = "testbed")]
mod opensearch;
mod packaging;
mod packs;
#[cfg(feature = "testbed")]
mod prometheus;
#[cfg(feature = "testbed")]
mod restore;
mod retention;
#[cfg(feature = "testbed")]
mod rondb;
#[cfg(feature = "testbed")]
mod s3;
mod schedule;
mod ssh;
#[cfg(feature = "testbed")]
mod tbcluster;
#[cfg(feature = "testbed")]
mod testbed;
mod verify;
