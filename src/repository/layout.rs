//! Where each part of a cluster lives inside a backup: the logical paths the backup writes and
//! the restore and the catalog rebuild read. One list, so that writer and readers cannot
//! disagree. (The RonDB files are under `rondb/<node-id>/BACKUP-<id>/`, the HopsFS volumes
//! under `hopsfs/<datanode>/vol<i>/`, the configured files under `config/`.)

/// The MySQL server's accounts, roles and grants, as SQL.
pub const USERS_SQL: &str = "users/users.sql";
/// The MySQL server's views, routines, triggers and events, as SQL.
pub const SCHEMA_SQL: &str = "users/schema.sql";
/// HopsFS in cloud mode: the block objects' versions current at the consistency point, one
/// `<key>\t<version id>\t<size>` line each, sorted by key.
pub const HOPSFS_CLOUD_VERSIONS: &str = "hopsfs/cloud/versions.tsv";
/// The OpenSearch snapshot repository's files (an `fs` repository, as OpenSearch wrote it).
pub const OPENSEARCH_REPOSITORY: &str = "opensearch/repository";
/// The catalog as of the backup's start (for `hopsdrd --rebuild-catalog`).
pub const CATALOG_COPY: &str = "hopsdr/catalog.db";
