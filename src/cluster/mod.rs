//! How hopsdr reaches the cluster: nodes (the head node itself, or remote over OpenSSH) that run
//! programs given as argv, with timeouts and cancellation, and stream their output (tar).
//! The RonDB, HopsFS and MySQL clients build on top of this, and so does the session with a
//! node's hopsdr agent (`agent`).

pub mod agent;
pub mod hopsfs;
pub mod mysql;
pub mod ndb_mgm;
pub mod ndb_tables;
pub mod node;
pub mod opensearch;
pub mod sqldump;
