//! Large values out of sled: an encoded object (or change-log object) larger than
//! [`INLINE_MAX`] is written to its own file, `values/<revision, 16 hex digits>`, and
//! sled holds only a pointer to it ([`pointer`]; the change-log record says
//! `obj_file`). Version R of any object is the file named R, so the live object and
//! its change-log record share one file.
//!
//! Why: sled 0.34 stores values inside its tree's pages and rewrites a whole page
//! (every value in it) when it consolidates one, and reclaims a log segment only when
//! little of it is live; 300 updates of a 1 MiB object left ~170 MB of segments for
//! ~33 MB of live bytes. A file is written once and unlinked once nothing refers to it.
//!
//! Crash safety: a batch's files are written to `<name>.tmp`, fdatasync'ed, renamed and
//! the directory fsync'ed BEFORE the sled batch that refers to them is applied, so a
//! pointer sled made durable always finds its complete file. A file is unlinked only
//! after the sled batch that dropped its last reference is durable. Whatever a crash
//! leaves behind (files of a batch that never committed, files whose unlink did not
//! happen, `.tmp` files) is found unreferenced and deleted when the store opens.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Encoded values larger than this go to a file.
pub const INLINE_MAX: usize = 64 << 10;

/// The directory, inside the data directory.
pub const DIR: &str = "values";

/// First byte of a pointer. No encoded object starts with it (a protobuf key byte of
/// 0 would be field number 0, which is invalid), so a stored value is a pointer
/// exactly when it starts with this byte.
const MARK: u8 = 0;
const POINTER_LEN: usize = 17;

/// Whether an encoded value of `len` bytes is stored in a file.
pub fn is_large(len: usize) -> bool {
    len > INLINE_MAX
}

/// What sled holds for an object: its bytes, or where they are.
#[derive(Debug, PartialEq, Eq)]
pub enum Stored<'a> {
    Inline(&'a [u8]),
    File { rev: u64, len: u64 },
}

/// The sled value pointing at file `rev` of `len` bytes.
pub fn pointer(rev: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(POINTER_LEN);
    v.push(MARK);
    v.extend_from_slice(&rev.to_be_bytes());
    v.extend_from_slice(&(len as u64).to_be_bytes());
    v
}

/// Reads a stored object value.
pub fn parse(v: &[u8]) -> Result<Stored<'_>, String> {
    match v.first() {
        Some(&MARK) => {
            if v.len() != POINTER_LEN {
                return Err(format!("bad value pointer of {} bytes", v.len()));
            }
            let rev = u64::from_be_bytes(v[1..9].try_into().expect("8 bytes"));
            let len = u64::from_be_bytes(v[9..17].try_into().expect("8 bytes"));
            Ok(Stored::File { rev, len })
        }
        _ => Ok(Stored::Inline(v)),
    }
}

fn name(rev: u64) -> String {
    format!("{rev:016x}")
}

/// The revision a file name stands for (`None`: not a value file, e.g. a `.tmp`).
pub fn rev_of(name: &str) -> Option<u64> {
    if name.len() != 16 {
        return None;
    }
    u64::from_str_radix(name, 16).ok()
}

/// The value directory of a data directory.
#[derive(Debug, Clone)]
pub struct Values {
    dir: PathBuf,
}

impl Values {
    /// Creates the directory if needed. Blocking.
    pub fn open(data_dir: &Path) -> io::Result<Values> {
        let dir = data_dir.join(DIR);
        std::fs::create_dir_all(&dir)?;
        Ok(Values { dir })
    }

    fn path(&self, rev: u64) -> PathBuf {
        self.dir.join(name(rev))
    }

    /// Writes `files` (revision, bytes) durably: each to a temporary file, synced,
    /// renamed into place (replacing a leftover of a failed batch), then one fsync
    /// of the directory. Blocking.
    pub fn write_all(&self, files: &[(u64, sled::IVec)]) -> io::Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        for (rev, bytes) in files {
            let tmp = self.dir.join(format!("{}.tmp", name(*rev)));
            let res = (|| {
                let mut f = File::create(&tmp)?;
                f.write_all(bytes)?;
                f.sync_data()?;
                std::fs::rename(&tmp, self.path(*rev))
            })();
            if let Err(e) = res {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        }
        File::open(&self.dir)?.sync_all()
    }

    /// The bytes of file `rev`, which must be `len` long. Blocking.
    pub fn read(&self, rev: u64, len: u64) -> io::Result<Vec<u8>> {
        let b = std::fs::read(self.path(rev))?;
        if b.len() as u64 != len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "value file {} is {} bytes, expected {len}",
                    self.path(rev).display(),
                    b.len()
                ),
            ));
        }
        Ok(b)
    }

    /// Unlinks the files of `revs` (missing ones are fine; other errors are logged:
    /// what stays is deleted at the next start). Blocking.
    pub fn remove(&self, revs: &[u64]) {
        for &r in revs {
            match std::fs::remove_file(self.path(r)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(file = %self.path(r).display(), error = %e, "cannot delete value file")
                }
            }
        }
    }

    /// Deletes every file of the directory that is not a value file in `keep`
    /// (leftovers of a crash); returns how many. Blocking.
    pub fn retain(&self, keep: &BTreeSet<u64>) -> io::Result<usize> {
        let mut n = 0;
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            let name = e.file_name();
            let wanted = name
                .to_str()
                .and_then(rev_of)
                .is_some_and(|r| keep.contains(&r));
            if !wanted {
                std::fs::remove_file(e.path())?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Which value files may go after a commit: every file below `floor` (all change-log
/// records below it are durably deleted) that no live object points at.
pub fn unreferenced(files: &BTreeSet<u64>, live: &BTreeSet<u64>, floor: u64) -> Vec<u64> {
    files
        .range(..floor)
        .filter(|r| !live.contains(r))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_round_trip_and_objects_are_never_pointers() {
        let p = pointer(0x0102_0304_0506_0708, 1 << 20);
        assert_eq!(
            parse(&p).unwrap(),
            Stored::File {
                rev: 0x0102_0304_0506_0708,
                len: 1 << 20
            }
        );
        assert!(parse(&p[..10]).is_err());
        // Encoded objects start with a field key, never 0.
        let o = crate::resource::Object::Pod(Default::default());
        let mut meta = kube_lite_proto::v1::ObjectMeta {
            name: "p".into(),
            ..Default::default()
        };
        meta.resource_version = 3;
        let mut o2 = o.clone();
        *o2.meta_mut() = meta;
        let enc = o2.encode();
        assert_ne!(enc[0], MARK);
        assert_eq!(parse(&enc).unwrap(), Stored::Inline(&enc[..]));
        assert_eq!(parse(b"").unwrap(), Stored::Inline(b""));
        assert!(!is_large(INLINE_MAX) && is_large(INLINE_MAX + 1));
    }

    #[test]
    fn names_are_revisions() {
        assert_eq!(rev_of(&name(0)), Some(0));
        assert_eq!(rev_of(&name(u64::MAX)), Some(u64::MAX));
        assert_eq!(rev_of("00000000000000ff"), Some(255));
        assert_eq!(rev_of("00000000000000ff.tmp"), None);
        assert_eq!(rev_of("disk-reserve"), None);
        assert!(name(255) < name(256), "names sort by revision");
    }

    #[test]
    fn write_read_remove_and_retain() {
        let d = tempfile::tempdir().unwrap();
        let v = Values::open(d.path()).unwrap();
        v.write_all(&[
            (5, sled::IVec::from(&b"five"[..])),
            (9, sled::IVec::from(&b"nine!"[..])),
        ])
        .unwrap();
        assert_eq!(v.read(5, 4).unwrap(), b"five");
        assert_eq!(
            v.read(9, 4).unwrap_err().kind(),
            io::ErrorKind::InvalidData,
            "a short or long file is refused"
        );
        // A rewrite of the same revision (after a failed batch) replaces the file.
        v.write_all(&[(5, sled::IVec::from(&b"FIVE5"[..]))])
            .unwrap();
        assert_eq!(v.read(5, 5).unwrap(), b"FIVE5");
        std::fs::write(d.path().join(DIR).join("0000000000000007.tmp"), b"x").unwrap();
        std::fs::write(d.path().join(DIR).join("0000000000000008"), b"x").unwrap();
        let keep: BTreeSet<u64> = [5, 9].into();
        assert_eq!(v.retain(&keep).unwrap(), 2);
        assert_eq!(std::fs::read_dir(d.path().join(DIR)).unwrap().count(), 2);
        v.remove(&[5, 1234]);
        assert_eq!(v.read(5, 5).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(v.read(9, 5).unwrap(), b"nine!");
    }

    #[test]
    fn files_go_once_below_the_floor_and_not_live() {
        let files: BTreeSet<u64> = [3, 5, 8, 12].into();
        let live: BTreeSet<u64> = [5, 12].into();
        assert_eq!(unreferenced(&files, &live, 0), Vec::<u64>::new());
        assert_eq!(unreferenced(&files, &live, 8), vec![3]);
        assert_eq!(unreferenced(&files, &live, 9), vec![3, 8]);
        assert_eq!(unreferenced(&files, &live, u64::MAX), vec![3, 8]);
    }
}
