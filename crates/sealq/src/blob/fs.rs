//! [`FsBlobStore`]: one directory per task, one file per blob.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;

use super::{BlobKey, BlobStore};
use crate::error::{BrokerError, BrokerErrorKind};
use crate::model::id::TaskId;
use crate::store::broker::BrokerResult;

/// Blobs as files `<dir>/<task id>/<digest prefix>.blob`. Directories are
/// created with mode 0700 and files 0600 on Unix. A write goes to a temporary
/// file that is renamed into place, so a reader never sees half a blob.
/// Deleting a task's blobs removes its directory.
#[derive(Debug, Clone)]
pub struct FsBlobStore {
    dir: Arc<PathBuf>,
}

fn io_error(what: &str, e: std::io::Error) -> BrokerError {
    let kind = match e.kind() {
        std::io::ErrorKind::PermissionDenied => BrokerErrorKind::PermissionDenied,
        _ => BrokerErrorKind::Unavailable,
    };
    BrokerError::new(kind, format!("blob store: {what}")).with_source(e)
}

fn create_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

impl FsBlobStore {
    /// Use (and create) `dir`.
    pub fn open(dir: impl AsRef<Path>) -> BrokerResult<Self> {
        let dir = dir.as_ref().to_path_buf();
        create_dir(&dir).map_err(|e| io_error("cannot create the directory", e))?;
        Ok(FsBlobStore { dir: Arc::new(dir) })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn task_dir(&self, id: TaskId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    fn path(&self, key: &BlobKey) -> PathBuf {
        self.task_dir(key.task)
            .join(format!("{}.blob", hex::encode(&key.digest[..16])))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&FsBlobStore) -> BrokerResult<T> + Send + 'static,
    ) -> BrokerResult<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| BrokerError::new(BrokerErrorKind::Other, format!("blob store: {e}")))?
    }
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn put(&self, key: &BlobKey, sealed: Vec<u8>) -> BrokerResult<()> {
        let key = *key;
        self.blocking(move |s| {
            let dir = s.task_dir(key.task);
            let tmp = dir.join(format!(".{}.tmp", rand::random::<u64>()));
            let write = || -> std::io::Result<()> {
                create_dir(&dir)?;
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                let mut f = opts.open(&tmp)?;
                f.write_all(&sealed)?;
                f.sync_all()?;
                std::fs::rename(&tmp, s.path(&key))
            };
            write().map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                io_error("cannot write a blob", e)
            })
        })
        .await
    }

    async fn get(&self, key: &BlobKey) -> BrokerResult<Option<Vec<u8>>> {
        let key = *key;
        self.blocking(move |s| match std::fs::read(s.path(&key)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("cannot read a blob", e)),
        })
        .await
    }

    async fn delete_tasks(&self, ids: &[TaskId]) -> BrokerResult<u64> {
        let ids = ids.to_vec();
        self.blocking(move |s| {
            let mut n = 0;
            for id in ids {
                let dir = s.task_dir(id);
                let files = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries.count() as u64,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_error("cannot delete a blob", e)),
                };
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => n += files,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error("cannot delete a blob", e)),
                }
            }
            Ok(n)
        })
        .await
    }

    async fn list_tasks(&self, after: Option<TaskId>, limit: usize) -> BrokerResult<Vec<TaskId>> {
        self.blocking(move |s| {
            let mut ids: Vec<TaskId> = std::fs::read_dir(&*s.dir)
                .map_err(|e| io_error("cannot list blobs", e))?
                .filter_map(|entry| TaskId::from_str(entry.ok()?.file_name().to_str()?).ok())
                .filter(|id| after.is_none_or(|a| *id > a))
                .collect();
            ids.sort_unstable();
            ids.truncate(limit.max(1));
            Ok(ids)
        })
        .await
    }

    fn describe(&self) -> String {
        format!("file://{}", self.dir.display())
    }
}
