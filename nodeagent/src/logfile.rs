//! Container log files: a writer that rotates at a size, and a reader that finds the
//! last N lines by reading backwards in chunks (never the whole file).
//!
//! A container's output is `<c>.log` plus at most one rotated part `<c>.log.rotated`
//! (the older bytes), each at most `max` bytes: kubelet's scheme with one old file.
//! The writer lives in the container init (see [`crate::init`]), which reads the
//! program's stdout/stderr through a pipe, so rotation survives agent restarts.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Bytes read at a time, backwards (tails) and forwards (streams).
pub const CHUNK: usize = 64 * 1024;

/// The rotated (older) part of log file `path`.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".rotated");
    PathBuf::from(s)
}

/// Appends to a log file and rotates it at `max` bytes (0 = never): the full file
/// becomes [`rotated_path`] (replacing the previous rotated part) and a new one starts.
/// A rotation happens at the last line end that fits when there is one, so lines stay
/// whole unless a single line is longer than `max`.
pub struct RotatingWriter {
    path: PathBuf,
    max: u64,
    file: File,
    size: u64,
}

impl RotatingWriter {
    pub fn open(path: impl Into<PathBuf>, max: u64) -> std::io::Result<RotatingWriter> {
        let path = path.into();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(RotatingWriter {
            path,
            max,
            file,
            size,
        })
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        if std::fs::rename(&self.path, rotated_path(&self.path)).is_err() {
            // Cannot keep the old part: drop it rather than grow without bound.
            self.file.set_len(0)?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = self.file.metadata()?.len();
        Ok(())
    }

    pub fn write(&mut self, mut buf: &[u8]) -> std::io::Result<()> {
        if self.max == 0 {
            self.file.write_all(buf)?;
            self.size += buf.len() as u64;
            return Ok(());
        }
        while !buf.is_empty() {
            let room = self.max.saturating_sub(self.size) as usize;
            if buf.len() <= room {
                self.file.write_all(buf)?;
                self.size += buf.len() as u64;
                return Ok(());
            }
            // Up to the last line end that fits; a line longer than what fits in an
            // empty file is split.
            let n = match buf[..room].iter().rposition(|b| *b == b'\n') {
                Some(i) => i + 1,
                None if self.size == 0 => room,
                None => 0,
            };
            if n > 0 {
                self.file.write_all(&buf[..n])?;
                self.size += n as u64;
                buf = &buf[n..];
            }
            self.rotate()?;
        }
        Ok(())
    }
}

/// Where the last `n` lines (n > 0) of the concatenation of `parts` (readers with their
/// lengths, oldest first) start: `(part index, offset)`. Reads backwards in [`CHUNK`]s,
/// so memory stays constant whatever the size. A final newline ends the last line.
pub fn tail_start<R: Read + Seek>(
    parts: &mut [(R, u64)],
    n: usize,
) -> std::io::Result<(usize, u64)> {
    let mut seen = 0usize;
    let mut first = true;
    let mut buf = vec![0u8; CHUNK];
    for idx in (0..parts.len()).rev() {
        let (r, len) = &mut parts[idx];
        let mut end = *len;
        while end > 0 {
            let start = end.saturating_sub(CHUNK as u64);
            let b = &mut buf[..(end - start) as usize];
            r.seek(SeekFrom::Start(start))?;
            r.read_exact(b)?;
            let mut hi = b.len();
            if first {
                first = false;
                if b.last() == Some(&b'\n') {
                    hi -= 1;
                }
            }
            if let Some(i) = b[..hi]
                .iter()
                .rev()
                .enumerate()
                .filter(|(_, c)| **c == b'\n')
                .nth(n.saturating_sub(seen + 1))
                .map(|(k, _)| hi - 1 - k)
            {
                return Ok((idx, start + i as u64 + 1));
            }
            seen += b[..hi].iter().filter(|c| **c == b'\n').count();
            end = start;
        }
    }
    Ok((0, 0))
}

/// Opens the parts of a log (`rotated`, then `path`) that exist, with their lengths.
pub fn open_parts(path: &Path) -> std::io::Result<Vec<(File, u64)>> {
    let mut parts = Vec::new();
    if let Ok(f) = File::open(rotated_path(path)) {
        let len = f.metadata()?.len();
        parts.push((f, len));
    }
    let f = File::open(path)?;
    let len = f.metadata()?.len();
    parts.push((f, len));
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn tail_of(parts: &[&[u8]], n: usize) -> Vec<u8> {
        let mut p: Vec<(Cursor<&[u8]>, u64)> = parts
            .iter()
            .map(|d| (Cursor::new(*d), d.len() as u64))
            .collect();
        let (i, off) = tail_start(&mut p, n).unwrap();
        let mut out = parts[i][off as usize..].to_vec();
        for d in &parts[i + 1..] {
            out.extend_from_slice(d);
        }
        out
    }

    #[test]
    fn tails_of_one_part() {
        let d: &[u8] = b"a\nb\nc\n";
        assert_eq!(tail_of(&[d], 1), b"c\n");
        assert_eq!(tail_of(&[d], 2), b"b\nc\n");
        assert_eq!(tail_of(&[d], 10), b"a\nb\nc\n");
        assert_eq!(tail_of(&[b"a\nb"], 1), b"b");
        assert_eq!(tail_of(&[b""], 3), b"");
        assert_eq!(tail_of(&[b"\n\n"], 1), b"\n");
    }

    #[test]
    fn tails_span_parts_and_chunks() {
        assert_eq!(tail_of(&[b"a\nb\n", b"c\n"], 2), b"b\nc\n");
        assert_eq!(tail_of(&[b"a\nb\n", b""], 1), b"b\n");
        assert_eq!(tail_of(&[b"a\nb", b"c\n"], 1), b"bc\n");
        // Many chunks: 200k lines of 8 bytes.
        let big: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("{i:07}\n").into_bytes())
            .collect();
        assert_eq!(tail_of(&[&big], 1), b"0199999\n");
        let t = tail_of(&[&big[..800_000], &big[800_000..]], 150_000);
        assert_eq!(&t[..8], b"0050000\n");
        assert_eq!(t.len(), 150_000 * 8);
        // A line longer than a chunk.
        let long: Vec<u8> = std::iter::repeat_n(b'x', 3 * CHUNK)
            .chain(*b"\nend\n")
            .collect();
        assert_eq!(tail_of(&[&long], 1), b"end\n");
        assert_eq!(tail_of(&[&long], 2).len(), 3 * CHUNK + 5);
    }

    #[test]
    fn the_writer_rotates_at_the_limit_keeping_one_old_part() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let mut w = RotatingWriter::open(&p, 100).unwrap();
        for i in 0..100 {
            w.write(format!("line {i:04}\n").as_bytes()).unwrap();
        }
        let cur = std::fs::read(&p).unwrap();
        let old = std::fs::read(rotated_path(&p)).unwrap();
        assert!(
            cur.len() <= 100 && old.len() <= 100,
            "{} {}",
            cur.len(),
            old.len()
        );
        assert!(cur.ends_with(b"line 0099\n"));
        // Lines stay whole; the rotated part is just before the current one.
        assert!(old.ends_with(b"\n") && old.starts_with(b"line "));
        let all = [old, cur].concat();
        let text = String::from_utf8(all).unwrap();
        let nums: Vec<u32> = text.lines().map(|l| l[5..].parse().unwrap()).collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
        // One write bigger than the limit, without newlines: split, still bounded.
        w.write(&[b'y'; 250]).unwrap();
        assert!(std::fs::metadata(&p).unwrap().len() <= 100);
        assert!(std::fs::metadata(rotated_path(&p)).unwrap().len() <= 100);
        // Reopened (a restarted writer) it continues from the file's size.
        drop(w);
        let mut w = RotatingWriter::open(&p, 100).unwrap();
        w.write(&[b'z'; 60]).unwrap();
        assert!(std::fs::metadata(&p).unwrap().len() <= 100);
        // No limit: never rotates.
        let q = dir.path().join("d.log");
        let mut w = RotatingWriter::open(&q, 0).unwrap();
        w.write(&[b'a'; 1000]).unwrap();
        assert_eq!(std::fs::metadata(&q).unwrap().len(), 1000);
        assert!(!rotated_path(&q).exists());
    }
}
