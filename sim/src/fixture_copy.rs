//! Copying a fixture tree to a scratch directory, restoring links that a copy lost.
//!
//! A fixture's links are relative symlinks (`docs/fixture-format.md`). Some copies of a tree
//! (archives, read-only shares) store each link as a small regular file holding the link's
//! target text instead. Sysfs attributes always end with a newline and links are relative,
//! so a file of one line that starts with `../` and has no trailing newline is a lost link:
//! [`copy_fixture`] turns it back into one. Tests use this to get a writable tree they can
//! edit (to build a state no recording holds) and that `SimHost` serves with real links.

use std::io;
use std::path::Path;

/// True when `bytes` is the text of a relative link that was stored as a file (the same
/// rule `SimHost` reads such files by).
fn is_lost_link(bytes: &[u8]) -> bool {
    crate::tree::flattened_link(bytes).is_some()
}

/// Copies the fixture at `src` into the (existing, empty) directory `dst`: directories,
/// files and symlinks as they are, files that are lost links as symlinks again. Files are
/// made writable in the copy.
pub fn copy_fixture(src: &Path, dst: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let ft = entry.file_type()?;
        if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else if ft.is_dir() {
            std::fs::create_dir(&to)?;
            copy_fixture(&from, &to)?;
        } else {
            let bytes = std::fs::read(&from)?;
            let in_fixture_meta = from.components().any(|c| c.as_os_str() == ".fixture");
            if !in_fixture_meta && is_lost_link(&bytes) {
                let target = String::from_utf8_lossy(&bytes).into_owned();
                std::os::unix::fs::symlink(target, &to)?;
            } else {
                std::fs::write(&to, &bytes)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_lost_link;

    #[test]
    fn tells_links_from_attributes() {
        assert!(is_lost_link(b"../../../../bus/pci/drivers/vfio-pci"));
        assert!(!is_lost_link(b"0x1234\n"));
        assert!(!is_lost_link(b"../with newline\n"));
        assert!(!is_lost_link(b"..\0binary"));
    }
}
