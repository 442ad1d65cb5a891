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

    /// The sub-folders of `dir`, skipping hidden ones (see [`class_folders`]).
    pub fn from_folders(dir: &Path) -> Result<Self> {
        let names = class_folders(dir)?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        Ok(Self::new(names))
    }

    /// The classes of a dataset whose training split is the folder `train`: each of
    /// the `others` must have the same class folders.
    pub fn of_splits(train: &Path, others: &[&Path]) -> Result<Self> {
        let classes = Self::from_folders(train)?;
        for dir in others {
            let here = Self::from_folders(dir)?;
            if here != classes {
                return Err(Error::Invalid {
                    path: dir.to_path_buf(),
                    message: format!(
                        "classes {:?} differ from the training classes {:?} of {}",
                        here.names(),
                        classes.names(),
                        train.display()
                    ),
                });
            }
        }
        Ok(classes)
    }

    /// Reads `classes.txt`: one name a line, in label order, at least
    /// [`MIN_CLASSES`].
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io("reading", path))?;
        let names: Vec<String> = text.lines().map(str::to_string).collect();
        if names.len() < MIN_CLASSES {
            return Err(Error::Invalid {
                path: path.to_path_buf(),
                message: format!(
                    "lists {} class names; a classifier needs at least {MIN_CLASSES}",
                    names.len()
                ),
            });
        }
        Ok(Self { names })
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        atomic::write_bytes(path, self.text().as_bytes())
    }

    /// Writes the list unless `path` holds it already; whether it wrote.
    pub fn write_if_changed(&self, path: &Path) -> Result<bool> {
        atomic::write_if_changed(path, self.text().as_bytes())
    }

    /// `classes.txt`'s text: one name a line.
    fn text(&self) -> String {
        format!("{}\n", self.names.join("\n"))
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

/// A classifier tells at least this many classes apart.
pub const MIN_CLASSES: usize = 2;

/// The class folders of `dir` (its sub-folders but hidden ones), each with its name
/// as exact text, sorted by name. Fewer than [`MIN_CLASSES`] is an error, and so is
/// a name with a control character (it would not survive `classes.txt`, one name a
/// line) or with white space at either end (it would look like another), naming the
/// folder.
pub fn class_folders(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut folders = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io("listing", dir))? {
        let entry = entry.map_err(io("listing", dir))?;
        let name = exact_name(&entry.file_name());
        if entry.path().is_dir() && !name.starts_with('.') {
            let problem = if name.chars().any(char::is_control) {
                Some("holds a control character")
            } else if name.trim() != name {
                // "rock " would show as "rock", beside a "rock" of its own.
                Some("starts or ends with white space, which no table or plot shows")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(Error::Invalid {
                    path: entry.path(),
                    message: format!(
                        "the class folder's name {name:?} {problem}; rename the folder"
                    ),
                });
            }
            folders.push((name, entry.path()));
        }
    }
    if folders.len() < MIN_CLASSES {
        return Err(Error::Invalid {
            path: dir.to_path_buf(),
            message: format!(
                "{} class folders (expected one sub-folder per class, at least {MIN_CLASSES})",
                folders.len()
            ),
        });
    }
    folders.sort();
    Ok(folders)
}

/// One file of a class folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassFile {
    /// Its name inside the class folder, as exact text.
    pub name: String,
    pub path: PathBuf,
    pub bytes: u64,
    /// When it last changed, in nanoseconds since 1970: with `bytes`, what tells a
    /// changed file without reading it.
    pub modified_ns: u64,
}

/// Entries of a class folder left out, each with why.
pub type Skipped = Vec<(PathBuf, String)>;

/// The files of `class_dir` sorted by name, skipping hidden ones, and the entries
/// that are not files (folders, FIFOs, links to nothing), each with why.
pub fn class_files(class_dir: &Path) -> Result<(Vec<ClassFile>, Skipped)> {
    let mut entries: Vec<(String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(class_dir).map_err(io("listing", class_dir))? {
        let entry = entry.map_err(io("listing", class_dir))?;
        entries.push((exact_name(&entry.file_name()), entry.path()));
    }
    entries.sort();
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    for (name, path) in entries {
        if name.starts_with('.') {
            continue;
        }
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => files.push(ClassFile {
                name,
                bytes: meta.len(),
                modified_ns: nanoseconds_since_1970(&meta),
                path,
            }),
            Ok(meta) => {
                let why = match meta.is_dir() {
                    true => "a folder inside a class folder",
                    false => "not a regular file (a FIFO, socket or device)",
                };
                skipped.push((path, why.to_string()));
            }
            Err(_) if path.is_symlink() => {
                skipped.push((path, "a link that leads nowhere or loops".to_string()))
            }
            Err(_) => skipped.push((path, "cannot be read".to_string())),
        }
    }
    Ok((files, skipped))
}

fn nanoseconds_since_1970(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |since| since.as_nanos() as u64)
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
        assert!(err.contains("0 class folders"), "{err}");
        std::fs::create_dir(dir.path().join("rock")).unwrap();
        let err = ClassList::from_folders(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("1 class folders") && err.contains("at least 2"),
            "{err}"
        );
        let classes = dir.path().join("classes.txt");
        std::fs::write(&classes, "rock\n").unwrap();
        let err = ClassList::read(&classes).unwrap_err().to_string();
        assert!(err.contains("lists 1 class names"), "{err}");
    }

    #[test]
    fn a_class_name_with_a_control_character_is_refused_naming_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["paper", "rock\nscissors", "tab\t"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        let err = ClassList::from_folders(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("control character") && err.contains("rename"),
            "{err}"
        );
    }

    #[test]
    fn a_class_name_with_white_space_at_an_end_is_refused_naming_the_folder() {
        for odd in ["rock ", " rock", "rock\u{a0}"] {
            let dir = tempfile::tempdir().unwrap();
            for name in ["paper", "rock", odd] {
                std::fs::create_dir(dir.path().join(name)).unwrap();
            }
            let err = ClassList::from_folders(dir.path()).unwrap_err().to_string();
            assert!(
                err.contains(&format!("{odd:?} starts or ends with white space")),
                "{err}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        for name in ["paper", "rock paper"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        assert!(
            ClassList::from_folders(dir.path()).is_ok(),
            "inner spaces are fine"
        );
    }

    #[test]
    fn splits_with_other_classes_are_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        for path in ["train/a", "train/b", "test/a", "test/c"] {
            std::fs::create_dir_all(dir.path().join(path)).unwrap();
        }
        let (train, test) = (dir.path().join("train"), dir.path().join("test"));
        let err = ClassList::of_splits(&train, &[&test])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("test") && err.contains(r#"["a", "c"]"#),
            "{err}"
        );
        std::fs::rename(dir.path().join("test/c"), dir.path().join("test/b")).unwrap();
        let classes = ClassList::of_splits(&train, &[&test]).unwrap();
        assert_eq!(classes.names(), ["a", "b"]);
    }
}
