//! Class names: the sub-folders of a folder-per-class dataset, sorted by name so
//! label indices match torchvision's `ImageFolder` (paper 0, rock 1, scissors 2).

use std::path::{Path, PathBuf};

use crate::atomic;
use crate::error::{Error, Result, io};
use crate::text::exact_name;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassList {
    names: Vec<String>,
}

impl ClassList {
    pub fn new(mut names: Vec<String>) -> Self {
        names.sort();
        Self { names }
    }

    /// The sub-folders of `dir`, skipping hidden ones; none is an error.
    pub fn from_folders(dir: &Path) -> Result<Self> {
        let names = class_folders(dir)?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        Ok(Self::new(names))
    }

    /// Reads `classes.txt`: one name a line, in label order.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io("reading", path))?;
        let names: Vec<String> = text.lines().map(str::to_string).collect();
        if names.is_empty() {
            return Err(Error::Invalid {
                path: path.to_path_buf(),
                message: "no class names".into(),
            });
        }
        Ok(Self { names })
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        atomic::write_bytes(path, format!("{}\n", self.names.join("\n")).as_bytes())
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn label(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    pub fn name(&self, label: usize) -> &str {
        &self.names[label]
    }
}

/// The class folders of `dir` (its sub-folders but hidden ones), each with its name
/// as exact text, sorted by name; none is an error.
pub fn class_folders(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut folders = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io("listing", dir))? {
        let entry = entry.map_err(io("listing", dir))?;
        let name = exact_name(&entry.file_name());
        if entry.path().is_dir() && !name.starts_with('.') {
            folders.push((name, entry.path()));
        }
    }
    if folders.is_empty() {
        return Err(Error::Invalid {
            path: dir.to_path_buf(),
            message: "no class folders (expected one sub-folder per class)".into(),
        });
    }
    folders.sort();
    Ok(folders)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_sort_like_image_folder() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["scissors", "rock", "paper", ".hidden"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), b"").unwrap();
        let classes = ClassList::from_folders(dir.path()).unwrap();
        assert_eq!(classes.names(), ["paper", "rock", "scissors"]);
        assert_eq!(classes.label("rock"), Some(1));
        let path = dir.path().join("classes.txt");
        classes.write(&path).unwrap();
        assert_eq!(ClassList::read(&path).unwrap(), classes);
    }

    #[test]
    fn no_class_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = ClassList::from_folders(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no class folders"), "{err}");
    }
}
