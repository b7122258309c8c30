//! A real full disk for tests: a small tmpfs (needs root) and a file that fills it, as
//! another program filling the disk would.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

use super::stderr;

/// A tmpfs mounted for the test, unmounted when dropped.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` bytes, or says why it cannot.
    pub fn mount(size: usize) -> Result<Tmpfs, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root (mounting a tmpfs needs root)".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", stderr(&out)));
        }
        Ok(Tmpfs { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills what is left of the file system holding `dir` with one file (another program
/// filling the disk), so that the disk stays full whatever corekv frees by itself.
pub fn fill_up(dir: &Path) -> PathBuf {
    let path = dir.join("ballast");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let chunk = vec![0u8; 64 << 10];
    loop {
        match f.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    // What a short last write left unfilled.
    let byte = [0u8; 1];
    while f.write(&byte).is_ok_and(|n| n == 1) {}
    path
}

pub fn free_bytes(dir: &Path) -> u64 {
    // SAFETY: statvfs writes into the struct we pass; the path is a valid C string.
    unsafe {
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        let mut st: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c.as_ptr(), &mut st), 0);
        st.f_bavail as u64 * st.f_frsize as u64
    }
}
