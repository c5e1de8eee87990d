//! The node library's error: each variant names what is wrong and where (the setting, the file,
//! the member), so the binary prints it as it is. `anyhow` is for the binary and the tests.

use std::path::PathBuf;

use crate::raft_types::TypeConfig;
use crate::store::Damaged;

/// Why the node library could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting, flag or argument that cannot be used, and why.
    #[error("{field}: {reason}")]
    Invalid {
        /// The setting or flag (`grpc_addr`, `--data-dir`, …).
        field: String,
        /// What is wrong with its value.
        reason: String,
    },
    /// A file or directory that cannot be read, written or listened on.
    #[error("{field} {}: {source}", path.display())]
    Io {
        /// The setting naming it (`admin_token_file`, `data_dir`, …).
        field: String,
        /// The file or address.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The member's data may have forgotten what it acknowledged: it refuses to serve.
    #[error(transparent)]
    Damaged(#[from] Damaged),
    /// A snapshot file that cannot be used.
    #[error("{0}")]
    Snapshot(String),
    /// RocksDB failed.
    #[error("the database in {}: {source}", dir.display())]
    Database {
        /// The data directory.
        dir: PathBuf,
        /// RocksDB's error.
        source: rocksdb::Error,
    },
    /// The Raft core or its storage failed, or a member stopped serving.
    #[error("{0}")]
    Raft(String),
    /// A certificate could not be made.
    #[error("certificate: {0}")]
    Certificate(String),
    /// Storage (the log, the state machine, snapshots) failed.
    #[error("storage: {0}")]
    Storage(String),
    /// The gRPC or HTTP server failed.
    #[error("{0}")]
    Server(String),
}

/// Errors of the crates underneath, kept as their text under the variant they belong to.
macro_rules! from_text {
    ($variant:ident: $($source:ty),+ $(,)?) => {
        $(impl From<$source> for Error {
            fn from(error: $source) -> Error {
                Error::$variant(error.to_string())
            }
        })+
    };
}

from_text!(Raft:
    openraft::error::Fatal<TypeConfig>,
    openraft::error::RaftError<TypeConfig, openraft::error::InitializeError<TypeConfig>>,
    openraft::ConfigError,
);
from_text!(Storage: openraft::StorageError<TypeConfig>, std::io::Error);
from_text!(Snapshot: serde_json::Error);
from_text!(Certificate: rcgen::Error);

impl From<figment::Error> for Error {
    fn from(error: figment::Error) -> Error {
        invalid("configuration", error.to_string())
    }
}
from_text!(Server:
    tonic::transport::Error,
    tonic_reflection::server::Error,
    metrics_exporter_prometheus::BuildError,
);

/// The node library's result.
pub type Result<T> = std::result::Result<T, Error>;

/// `field: reason`.
pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Invalid { field: field.into(), reason: reason.into() }
}

/// A file `path` that the setting `field` names could not be used.
pub fn io(field: impl Into<String>, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let (field, path) = (field.into(), path.into());
    move |source| Error::Io { field, path, source }
}
