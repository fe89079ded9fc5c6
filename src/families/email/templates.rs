//! The templates directory, read into [`Templates`] and read again when a file in it changes,
//! so an operator fixes a template without restarting the daemon. A job whose templates cannot
//! be read waits (its attempt fails transiently) until they can.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use quizworker_jobs::email::{TemplateError, Templates};

/// Files of a templates directory at most, and bytes of one file: a directory is written by
/// people, so anything bigger is a mistake (a mount of the wrong directory).
const MAX_FILES: usize = 2000;
const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// How often the directory is looked at for changes, at most.
const RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("could not read the templates directory {dir}: {error}")]
    Read { dir: PathBuf, error: std::io::Error },
    #[error("the templates directory {dir}: {reason}")]
    TooLarge { dir: PathBuf, reason: String },
    #[error("the templates directory {dir}: {error}")]
    Template { dir: PathBuf, error: TemplateError },
}

/// Reads every template file under `dir` (paths relative to it, `/`-separated).
pub fn load(dir: &Path, default_locale: &str) -> Result<Templates, LoadError> {
    let files = read_files(dir)?;
    Templates::new(files, default_locale).map_err(|error| LoadError::Template {
        dir: dir.to_owned(),
        error,
    })
}

fn read_files(dir: &Path) -> Result<Vec<(String, String)>, LoadError> {
    let read_error = |error| LoadError::Read {
        dir: dir.to_owned(),
        error,
    };
    let mut files = Vec::new();
    for (path, len, _) in walk(dir).map_err(read_error)? {
        if len > MAX_FILE_BYTES {
            return Err(LoadError::TooLarge {
                dir: dir.to_owned(),
                reason: format!("{path} is {len} bytes, more than {MAX_FILE_BYTES}"),
            });
        }
        let text = std::fs::read_to_string(dir.join(&path)).map_err(read_error)?;
        files.push((path, text));
    }
    Ok(files)
}

/// Every regular file under `dir`: its relative path, size and modification time. Hidden
/// files (editors' swap files) are left out.
fn walk(dir: &Path) -> std::io::Result<Vec<(String, u64, SystemTime)>> {
    let mut found = Vec::new();
    let mut pending = vec![(dir.to_owned(), String::new())];
    while let Some((at, prefix)) = pending.pop() {
        for entry in std::fs::read_dir(&at)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let path = format!("{prefix}{name}");
            let meta = entry.metadata()?;
            if meta.is_dir() {
                pending.push((entry.path(), format!("{path}/")));
            } else if meta.is_file() {
                found.push((path, meta.len(), meta.modified()?));
            }
            if found.len() + pending.len() > MAX_FILES {
                return Err(std::io::Error::other(format!(
                    "more than {MAX_FILES} files: is this the right directory?"
                )));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The templates as last read, read again when the directory's files change.
pub struct TemplateStore {
    dir: PathBuf,
    default_locale: String,
    cached: Mutex<Option<Cached>>,
}

struct Cached {
    checked: Instant,
    fingerprint: Vec<(String, u64, SystemTime)>,
    templates: Arc<Templates>,
}

impl TemplateStore {
    pub fn new(dir: PathBuf, default_locale: String) -> Self {
        TemplateStore {
            dir,
            default_locale,
            cached: Mutex::new(None),
        }
    }

    /// The current templates. Reading them is blocking file I/O of a few small files, at most
    /// once a second.
    pub fn get(&self) -> Result<Arc<Templates>, LoadError> {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cached.as_ref()
            && c.checked.elapsed() < RECHECK
        {
            return Ok(c.templates.clone());
        }
        let fingerprint = walk(&self.dir).map_err(|error| LoadError::Read {
            dir: self.dir.clone(),
            error,
        })?;
        if let Some(c) = cached.as_mut()
            && c.fingerprint == fingerprint
        {
            c.checked = Instant::now();
            return Ok(c.templates.clone());
        }
        let templates = Arc::new(load(&self.dir, &self.default_locale)?);
        if cached.is_some() {
            tracing::info!(dir = %self.dir.display(), "email templates changed; read again");
        }
        *cached = Some(Cached {
            checked: Instant::now(),
            fingerprint,
            templates: templates.clone(),
        });
        Ok(templates)
    }
}
