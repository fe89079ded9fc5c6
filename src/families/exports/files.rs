//! The export directory: files written atomically (a temporary name in the same directory,
//! fsync, rename, fsync of the directory), under names that no input can steer elsewhere and
//! that two exports never share, with their size and SHA-256 counted on the way.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The most characters of a label (a test id, an attempt id) kept in a file name.
const LABEL_CHARS: usize = 48;

/// The directory exports go to.
#[derive(Debug, Clone)]
pub struct ExportDir {
    dir: PathBuf,
}

/// A file that is complete and in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WrittenFile {
    /// The full path.
    pub path: PathBuf,
    pub file_name: String,
    pub bytes: u64,
    /// Hex.
    pub sha256: String,
}

impl ExportDir {
    pub fn new(dir: impl Into<PathBuf>) -> ExportDir {
        ExportDir { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Starts a file `{kind}-{label}-{ulid}.{ext}` under a temporary name. `label` is reduced
    /// to ASCII letters, digits, `-` and `_` (others become `_`) and cut to 48 characters, so
    /// `../../etc/passwd` becomes `______etc_passwd`, a name inside the directory, never a
    /// path elsewhere; the ULID keeps two exports of the same thing apart.
    pub fn create(&self, kind: &str, label: &str, ext: &str) -> io::Result<AtomicFile> {
        fs::create_dir_all(&self.dir)?;
        let id = ulid::Ulid::new();
        let file_name = format!("{}-{}-{id}.{}", safe(kind), safe(label), safe(ext));
        let temp = self.dir.join(format!(".{file_name}.tmp"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        Ok(AtomicFile {
            out: Some(BufWriter::with_capacity(256 * 1024, file)),
            temp,
            path: self.dir.join(&file_name),
            dir: self.dir.clone(),
            file_name,
            hasher: Sha256::new(),
            bytes: 0,
        })
    }
}

/// `label` as a file name part: only `[A-Za-z0-9_-]`, at most 48 characters, never empty.
/// Dots go too, so that no part is `.` or `..` and the extension is ours.
pub fn safe(label: &str) -> String {
    let cleaned: String = label
        .chars()
        .take(LABEL_CHARS)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "_".into()
    } else {
        cleaned
    }
}

/// A file being written: it appears under its final name only on [`commit`](Self::commit), and
/// its temporary file is removed if it is dropped before.
pub struct AtomicFile {
    out: Option<BufWriter<File>>,
    temp: PathBuf,
    path: PathBuf,
    dir: PathBuf,
    file_name: String,
    hasher: Sha256,
    bytes: u64,
}

impl AtomicFile {
    /// Flushes, fsyncs, renames into place and fsyncs the directory, so that after a crash the
    /// file is either whole under its name or absent.
    pub fn commit(mut self) -> io::Result<WrittenFile> {
        let out = self.out.take().expect("committed once");
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&self.temp, &self.path)?;
        File::open(&self.dir)?.sync_all()?;
        Ok(WrittenFile {
            path: self.path.clone(),
            file_name: self.file_name.clone(),
            bytes: self.bytes,
            sha256: hex::encode(self.hasher.clone().finalize()),
        })
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let out = self.out.as_mut().expect("not committed");
        let n = out.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.as_mut().expect("not committed").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_inside_the_directory() {
        assert_eq!(safe("../../etc/passwd"), "______etc_passwd");
        assert_eq!(safe(""), "_");
        assert_eq!(safe("नेहा"), "____");
        assert_eq!(safe(&"x".repeat(100)).len(), LABEL_CHARS);
    }

    #[test]
    fn a_file_appears_whole_on_commit_and_not_at_all_if_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let exports = ExportDir::new(dir.path().join("exports"));
        let mut file = exports.create("results", "../t/1", "csv").unwrap();
        file.write_all(b"abc").unwrap();
        assert_eq!(fs::read_dir(exports.path()).unwrap().count(), 1);
        let written = file.commit().unwrap();
        assert_eq!(written.path.parent().unwrap(), exports.path());
        assert!(
            written.file_name.starts_with("results-___t_1-"),
            "{written:?}"
        );
        assert_eq!(fs::read(&written.path).unwrap(), b"abc");
        assert_eq!(written.bytes, 3);
        assert_eq!(
            written.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );

        let mut dropped = exports.create("results", "t", "csv").unwrap();
        dropped.write_all(b"partial").unwrap();
        drop(dropped);
        let names: Vec<_> = fs::read_dir(exports.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from(&written.file_name)]);
    }
}
