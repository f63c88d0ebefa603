//! What the three wings (operator, agent, CLI) share: the `PostgresCluster` types and the names
//! of objects, labels, annotations and ports. Nothing here does I/O.

pub mod backup;
pub mod cluster;
pub mod member;
pub mod names;
pub mod patroni;
pub mod postgres_backup;
pub mod state;
pub mod timing;

pub use cluster::{PostgresCluster, PostgresClusterSpec, PostgresClusterStatus};
pub use postgres_backup::{PostgresBackup, PostgresBackupSpec, PostgresBackupStatus};
