//! Real faulty storage for tests: a small tmpfs that fills up, a folder made read-only by a
//! bind mount, a command run as another user. They need root (tests run as root, here and in
//! CI); without it they fail loudly rather than pass without testing anything.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mount that is undone when dropped.
pub struct Mount {
    at: PathBuf,
}

impl Mount {
    /// A tmpfs of `size` (`64k`, `1m`) at `at`, which is created.
    #[track_caller]
    pub fn tmpfs(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        run(
            &[
                "mount",
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
            ],
            at,
        );
        Self {
            at: at.to_path_buf(),
        }
    }

    /// `at` mounted over itself read-only: nothing under it can be written, even by root.
    #[track_caller]
    pub fn read_only(at: &Path) -> Self {
        run(&["mount", "--bind", at.to_str().unwrap()], at);
        let mount = Self {
            at: at.to_path_buf(),
        };
        run(&["mount", "-o", "remount,bind,ro"], at);
        mount
    }

    /// Gives the tmpfs a new size.
    #[track_caller]
    pub fn resize(&self, size: &str) {
        run(&["mount", "-o", &format!("remount,size={size}")], &self.at);
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

#[track_caller]
fn run(args: &[&str], at: &Path) {
    let output = Command::new(args[0])
        .args(&args[1..])
        .arg(at)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}; these tests need mount(8) and root"));
    assert!(
        output.status.success(),
        "{args:?} {} failed: {}; these tests need root to mount a tmpfs or a read-only bind \
         mount, and cannot test the fault without it",
        at.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Writes to `path` until the filesystem is full.
#[track_caller]
pub fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 4096];
    loop {
        match file.write_all(&block).and_then(|()| file.sync_all()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
}

/// The bytes of `path`, to show a command left the file as it was.
#[track_caller]
pub fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The names in `dir`, sorted.
#[track_caller]
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
