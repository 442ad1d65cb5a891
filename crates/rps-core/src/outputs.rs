//! What each stage leaves, listed for make: `DATA/.outputs/STAGE`, one path a line,
//! relative to DATA. The Makefile reruns a stage when a path of its list is gone, so
//! deleting any of its outputs, not only the one file make watches, redoes it. Make
//! splits words on white space: a path holding any (a class folder "rock ") is
//! listed by its nearest folder that holds none.

use std::path::{Path, PathBuf};

use crate::error::{Result, io};
use crate::{Layout, atomic};

/// Lists those of `written` (paths under DATA) that exist as what `stage` leaves:
/// a stage names every file it may write (`best.npz` only with a validation split).
pub fn record(layout: &Layout, stage: &str, written: &[PathBuf]) -> Result<()> {
    let mut lines: Vec<String> = written
        .iter()
        .filter(|path| path.exists())
        .filter_map(|path| make_word(layout.root(), path))
        .collect();
    lines.sort();
    lines.dedup();
    let mut text = lines.join("\n");
    text.push('\n');
    atomic::write_bytes(&layout.outputs(stage), text.as_bytes())
}

/// Lists every entry of `folder` (a folder the stage owns) and the folder itself.
pub fn record_folder(layout: &Layout, stage: &str, folder: &Path) -> Result<()> {
    let mut written = vec![folder.to_path_buf()];
    for entry in std::fs::read_dir(folder).map_err(io("listing", folder))? {
        written.push(entry.map_err(io("listing", folder))?.path());
    }
    record(layout, stage, &written)
}

/// `path` relative to `root` as one make word: itself, or its nearest folder whose
/// name make can read (plain printable ASCII without white space or make's own
/// characters); `None` when that is `root`.
fn make_word(root: &Path, path: &Path) -> Option<String> {
    let readable = |text: &str| {
        text.bytes()
            .all(|b| b.is_ascii_graphic() && !b"$%*?[]\\#:;=\"'`()".contains(&b))
    };
    let mut relative = path.strip_prefix(root).ok()?;
    loop {
        match relative.to_str().filter(|t| readable(t)) {
            Some(text) if !text.is_empty() => return Some(text.to_string()),
            _ => relative = relative.parent()?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_make_cannot_read_are_listed_by_their_folder() {
        let root = Path::new("/data");
        let word = |p: &str| make_word(root, &root.join(p));
        assert_eq!(
            word("results/report.html").as_deref(),
            Some("results/report.html")
        );
        assert_eq!(word("rps/train/rock ").as_deref(), Some("rps/train"));
        assert_eq!(word("rps/train/it's").as_deref(), Some("rps/train"));
        assert_eq!(word("raw/a$b.zip").as_deref(), Some("raw"));
        assert_eq!(word("stray file"), None);
        assert_eq!(make_word(root, Path::new("/elsewhere/x")), None);
    }

    #[test]
    fn a_list_holds_each_path_once() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        let paths = ["rps/train/rock ", "rps/train/paper", "rps/train/it's"];
        let mut written: Vec<PathBuf> = paths.iter().map(|p| dir.path().join(p)).collect();
        for path in &written {
            std::fs::create_dir_all(path).unwrap();
        }
        // A file the stage may write but did not is not listed.
        written.push(dir.path().join("results/best.npz"));
        record(&layout, "fetch", &written).unwrap();
        let text = std::fs::read_to_string(layout.outputs("fetch")).unwrap();
        assert_eq!(text, "rps/train\nrps/train/paper\n");
    }
}
