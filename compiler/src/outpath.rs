//! Output paths are checked before any work starts: a typo in a directory must not cost a
//! long compilation or evaluation, and no tool creates directories the user did not make.

use std::path::Path;

use anyhow::{bail, Result};

/// `path` can be written: its directory exists and accepts a new file. `flag` names the
/// option the path came from, for the error line.
pub fn check_writable(path: &Path, flag: &str) -> Result<()> {
    let Some(name) = path.file_name() else {
        bail!(
            "cannot write output {} ({flag}): not a file path",
            path.display()
        );
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!(
            "cannot write output {} ({flag}): directory {} does not exist (create it first)",
            path.display(),
            dir.display()
        );
    }
    if path.is_dir() {
        bail!(
            "cannot write output {} ({flag}): it is a directory",
            path.display()
        );
    }
    // A probe file beside the target: the same permission the final atomic rename needs.
    let probe = dir.join(format!(
        ".{}.probe-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => bail!(
            "cannot write output {} ({flag}): directory {} is not writable: {e}",
            path.display(),
            dir.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_directory_and_directory_target_are_refused() {
        let d = tempfile::tempdir().unwrap();
        check_writable(&d.path().join("a.json"), "--out-json").unwrap();
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            0,
            "probe left behind"
        );
        let err = check_writable(&d.path().join("no/a.json"), "--out-json").unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        let err = check_writable(d.path(), "-o").unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
    }
}
