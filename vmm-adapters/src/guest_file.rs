//! Writing a guest image the kit builds (QEMU's firmware, Cloud
//! Hypervisor's PVH kernel) into a trial directory: once (an image already
//! there with the same bytes is reused), and whole or not at all (written
//! aside, then renamed), so a VMM never reads half a file. No fsync: the
//! file lives as long as its trial, and the rename alone makes it whole for
//! every reader (a sync on each trial's start cost milliseconds on a busy disk).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes `img` as `dir/name` and returns its path.
pub fn write_image(dir: &Path, name: &str, img: &[u8]) -> io::Result<PathBuf> {
    let path = dir.join(name);
    if std::fs::read(&path).is_ok_and(|have| have == img) {
        return Ok(path);
    }
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(img)?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_is_written_once_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_image(dir.path(), "g.bin", b"abc").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"abc");
        let before = std::fs::metadata(&p).unwrap().modified().unwrap();
        assert_eq!(write_image(dir.path(), "g.bin", b"abc").unwrap(), p);
        assert_eq!(
            std::fs::metadata(&p).unwrap().modified().unwrap(),
            before,
            "reused"
        );
        write_image(dir.path(), "g.bin", b"xyz").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"xyz");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary left: {names:?}");
    }
}
