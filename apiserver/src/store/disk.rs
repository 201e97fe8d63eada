//! The sled side of the store: opening (with a disk reserve, so a restart on a full
//! disk still opens), one durable commit, and what a failed write means for the client.
//!
//! sled 0.34 poisons itself after the first I/O error (every later operation returns
//! it), so after a failed commit the store drops the [`Disk`] and opens it again once
//! a write comes in (see the committer in `store.rs`). sled's recovery zeroes the rest
//! of its last segment, which needs free space: on a full disk that fails, so the data
//! directory keeps a reserve file ([`RESERVE_FILE`]) that [`Disk::open`] deletes when
//! it has to, and that is written again once there is room.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::ApiError;

/// The reserve file, in the data directory.
pub const RESERVE_FILE: &str = "disk-reserve";

/// sled's log segment size for new stores. sled 0.34 stores a value larger than a
/// quarter of a segment in its own "blob" file, and deletes a replaced blob only when
/// the log segment that was active at the replacement fills up; with 512 KiB segments
/// (the default) holding little more than blob pointers, that takes so long that every
/// version of a large object stays on disk. 8 MiB segments keep objects up to 2 MiB
/// (over the 1.5 MiB object limit) inside the log, whose segments sled reuses once they
/// are mostly garbage.
pub const SEGMENT_SIZE: usize = 8 << 20;

/// Whether the file system of `data_dir` has room for sled to open (a failed open on
/// a full disk can leave sled's files unopenable; see [`Disk::open`]).
pub fn room_to_open(data_dir: &Path) -> bool {
    let segment_size = persisted_segment_size(&data_dir.join("sled")).unwrap_or(SEGMENT_SIZE);
    free_bytes(data_dir).is_none_or(|f| f >= 2 * segment_size as u64)
}

/// Free bytes for unprivileged writers on the file system of `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// The segment size an existing store was created with (sled refuses another).
fn persisted_segment_size(sled_dir: &Path) -> Option<usize> {
    let conf = std::fs::read_to_string(sled_dir.join("conf")).ok()?;
    parse_segment_size(&conf)
}

fn parse_segment_size(conf: &str) -> Option<usize> {
    conf.lines()
        .find_map(|l| l.strip_prefix("segment_size:"))
        .and_then(|v| v.trim().parse().ok())
}

/// An open sled database and its data file (fdatasync'ed at every commit).
pub struct Disk {
    pub db: sled::Db,
    data_file: Arc<File>,
}

/// Whether `e` means the file system is full (ENOSPC, or a quota).
pub fn is_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
        || matches!(e.raw_os_error(), Some(28) | Some(122))
}

fn sled_io(e: &sled::Error) -> Option<&std::io::Error> {
    match e {
        sled::Error::Io(io) => Some(io),
        _ => None,
    }
}

/// The client's error for a write the store could not make durable (nothing of it
/// was applied): RESOURCE_EXHAUSTED naming the directory when the disk is full,
/// UNAVAILABLE (retry) otherwise.
pub fn write_error(data_dir: &Path, e: &sled::Error) -> ApiError {
    if sled_io(e).is_some_and(is_full) {
        ApiError::Exhausted(format!(
            "data directory {} is full (No space left on device); the write was not applied",
            data_dir.display()
        ))
    } else {
        ApiError::Unavailable(format!(
            "store write failed in {} ({e}); the write was not applied",
            data_dir.display()
        ))
    }
}

impl Disk {
    /// Opens (or creates) the sled database in `data_dir/sled`, with a page cache of
    /// `cache_bytes`. On a full disk, deletes the reserve file and tries again; then
    /// writes the reserve (`reserve_bytes`, 0 = none) if it is missing and fits.
    /// Blocking.
    pub fn open(
        data_dir: &Path,
        cache_bytes: u64,
        reserve_bytes: u64,
    ) -> Result<Disk, sled::Error> {
        let dir = data_dir.join("sled");
        let segment_size = persisted_segment_size(&dir).unwrap_or(SEGMENT_SIZE);
        let open = || {
            sled::Config::new()
                .path(&dir)
                .mode(sled::Mode::HighThroughput)
                .cache_capacity(cache_bytes)
                .segment_size(segment_size)
                .flush_every_ms(None)
                .open()
        };
        let reserve = data_dir.join(RESERVE_FILE);
        // sled's recovery zeroes the rest of its last segment; when that fails for want
        // of space, sled's files are left in a state it then refuses (Corruption), so
        // make room BEFORE opening rather than after a failed open.
        let need = 2 * segment_size as u64;
        if reserve_bytes > 0 && reserve.exists() && free_bytes(data_dir).is_some_and(|f| f < need) {
            tracing::warn!(
                data_dir = %data_dir.display(),
                "data directory is (nearly) full: deleting the disk reserve to open the store"
            );
            std::fs::remove_file(&reserve)?;
        }
        let db = open().inspect_err(|e| tracing::error!(error = ?e, "opening the store failed"))?;
        // sled 0.34 makes its log stable with sync_file_range, which neither flushes the
        // device's write cache nor is a durability guarantee; every commit therefore also
        // fdatasyncs sled's data file (one call per batch, as etcd does for its WAL).
        let data_file = Arc::new(File::open(dir.join("db"))?);
        ensure_reserve(&reserve, reserve_bytes);
        Ok(Disk { db, data_file })
    }

    /// Applies `batches` in order, then makes them durable (one flush, one fdatasync).
    pub async fn commit(&self, batches: Vec<sled::Batch>) -> Result<(), sled::Error> {
        for b in batches {
            self.db.apply_batch(b)?;
        }
        self.db.flush_async().await?;
        let f = self.data_file.clone();
        tokio::task::spawn_blocking(move || f.sync_data())
            .await
            .map_err(|e| sled::Error::Io(std::io::Error::other(e)))??;
        Ok(())
    }
}

/// Writes the reserve file if it is missing (deleting what it wrote when the disk
/// cannot hold it). Returns whether the reserve is in place.
pub fn ensure_reserve(path: &PathBuf, bytes: u64) -> bool {
    if bytes == 0 {
        return true;
    }
    if path.metadata().is_ok_and(|m| m.len() >= bytes) {
        return true;
    }
    let write = || -> std::io::Result<()> {
        let mut f = File::create(path)?;
        let chunk = vec![0u8; 64 << 10];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        f.sync_all()
    };
    match write() {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the disk reserve (will retry)");
            let _ = std::fs::remove_file(path);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_disk_is_resource_exhausted_naming_the_directory() {
        let enospc = sled::Error::Io(std::io::Error::from_raw_os_error(28));
        let e = write_error(Path::new("/var/kl"), &enospc);
        assert_eq!(
            e,
            ApiError::Exhausted(
                "data directory /var/kl is full (No space left on device); the write was not applied"
                    .into()
            )
        );
        // sled wraps some errors in a custom io::Error of kind StorageFull.
        let wrapped = sled::Error::Io(std::io::Error::new(
            ErrorKind::StorageFull,
            "Os { code: 28 }",
        ));
        assert!(matches!(
            write_error(Path::new("/d"), &wrapped),
            ApiError::Exhausted(_)
        ));
        let eio = sled::Error::Io(std::io::Error::from_raw_os_error(5));
        assert!(
            matches!(write_error(Path::new("/d"), &eio), ApiError::Unavailable(m) if m.contains("/d"))
        );
        assert!(matches!(
            write_error(Path::new("/d"), &sled::Error::Unsupported("x".into())),
            ApiError::Unavailable(_)
        ));
    }

    #[test]
    fn segment_size_of_an_existing_store_is_kept() {
        let conf = "segment_size: 524288\nuse_compression: false\nversion: 0.34\n";
        assert_eq!(parse_segment_size(conf), Some(524288));
        assert_eq!(parse_segment_size("version: 0.34\n"), None);
        let d = tempfile::tempdir().unwrap();
        assert_eq!(persisted_segment_size(d.path()), None);
    }

    #[test]
    fn reserve_is_written_once_and_zero_means_none() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(RESERVE_FILE);
        assert!(ensure_reserve(&p, 0));
        assert!(!p.exists());
        assert!(ensure_reserve(&p, 100_000));
        assert_eq!(p.metadata().unwrap().len(), 100_000);
        assert!(ensure_reserve(&p, 100_000));
    }
}
