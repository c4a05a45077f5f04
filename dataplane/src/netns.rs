//! Running code inside another network namespace without disturbing anybody: a dedicated OS
//! thread setns()es and does the work; tokio worker threads never change namespace.

use std::fs::File;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("open netns {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("setns into netns {path}: {source}")]
    Setns { path: PathBuf, source: nix::Error },
    #[error("netns worker thread: {0}")]
    Thread(String),
}

/// An open handle on a network namespace (keeps it alive while open).
#[derive(Debug)]
pub struct NetnsHandle {
    path: PathBuf,
    file: File,
}

impl NetnsHandle {
    pub fn open(path: &Path) -> Result<Self, NetnsError> {
        let file = File::open(path).map_err(|source| NetnsError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(NetnsHandle {
            path: path.to_path_buf(),
            file,
        })
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn file(&self) -> &File {
        &self.file
    }
    /// Moves the CALLING THREAD into this namespace. Only call on a thread you own.
    pub fn enter(&self) -> Result<(), NetnsError> {
        nix::sched::setns(&self.file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|source| {
            NetnsError::Setns {
                path: self.path.clone(),
                source,
            }
        })
    }
}

/// Display form of an optional netns ("current" when the caller's own namespace is meant).
pub fn display_netns(path: Option<&Path>) -> String {
    path.map_or_else(|| "current".to_string(), |p| p.display().to_string())
}

/// Runs `f` on a fresh thread that first enters `netns` (or stays in the process's namespace
/// when `None`). Blocks the caller until `f` returns.
pub fn run_in_netns<R, F>(netns: Option<&Path>, f: F) -> Result<R, NetnsError>
where
    R: Send + 'static,
    F: FnOnce() -> R + Send + 'static,
{
    let handle = netns.map(NetnsHandle::open).transpose()?;
    std::thread::Builder::new()
        .name("ferrovn-netns".into())
        .spawn(move || {
            if let Some(h) = &handle {
                h.enter()?;
            }
            Ok(f())
        })
        .map_err(|e| NetnsError::Thread(e.to_string()))?
        .join()
        .map_err(|_| NetnsError::Thread("worker panicked".into()))?
}
