//! `.npy` / `.npz` files, readable by numpy, through `ndarray-npy`.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use ndarray::{ArrayBase, ArrayD, Data, Dimension};
use ndarray_npy::{NpzReader, ReadNpyExt, ReadableElement, WritableElement, WriteNpyExt};

use crate::atomic;
use crate::error::{Error, Result, io};

/// Writes an array as `.npy`, atomically.
pub fn write<A, S, D>(path: &Path, array: &ArrayBase<S, D>) -> Result<()>
where
    A: WritableElement,
    S: Data<Elem = A>,
    D: Dimension,
{
    atomic::write_file(path, |out| {
        array.write_npy(out).map_err(|source| Error::WriteNpy {
            path: path.to_path_buf(),
            source,
        })
    })
}

/// Reads a whole `.npy` file of any rank.
pub fn read<A: ReadableElement>(path: &Path) -> Result<ArrayD<A>> {
    let file = File::open(path).map_err(io("opening", path))?;
    ArrayD::read_npy(BufReader::new(file)).map_err(|source| Error::ReadNpy {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes named arrays as an uncompressed `.npz` (what `numpy.savez` writes), atomically.
pub fn write_npz<'a, A, I>(path: &Path, arrays: I) -> Result<()>
where
    A: WritableElement + 'a,
    I: IntoIterator<Item = (&'a str, &'a ArrayD<A>)>,
{
    let invalid = |e: &dyn std::fmt::Display| Error::Invalid {
        path: path.to_path_buf(),
        message: format!("writing .npz: {e}"),
    };
    atomic::write_file(path, |out| {
        let mut npz = ndarray_npy::NpzWriter::new(out);
        for (name, array) in arrays {
            npz.add_array(name, array).map_err(|e| invalid(&e))?;
        }
        npz.finish().map_err(|e| invalid(&e))?;
        Ok(())
    })
}

/// An open `.npz` archive (as written by `numpy.savez`).
pub struct Npz {
    reader: NpzReader<File>,
    path: std::path::PathBuf,
}

impl Npz {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(io("opening", path))?;
        let reader = NpzReader::new(file).map_err(|e| Error::Invalid {
            path: path.to_path_buf(),
            message: format!("not an .npz archive: {e}"),
        })?;
        Ok(Self {
            reader,
            path: path.to_path_buf(),
        })
    }

    pub fn names(&mut self) -> Result<Vec<String>> {
        let names = self.reader.names().map_err(|e| self.invalid(e))?;
        Ok(names
            .into_iter()
            .map(|n| n.trim_end_matches(".npy").to_string())
            .collect())
    }

    /// The array stored under `name` (without the `.npy` suffix).
    pub fn get<A: ReadableElement>(&mut self, name: &str) -> Result<ArrayD<A>> {
        self.reader
            .by_name(&format!("{name}.npy"))
            .map_err(|e| Error::Invalid {
                path: self.path.clone(),
                message: format!("array {name:?}: {e}"),
            })
    }

    fn invalid(&self, e: impl std::fmt::Display) -> Error {
        Error::Invalid {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array3, array};
    use ndarray_npy::NpzWriter;

    #[test]
    fn npy_round_trips_shape_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npy");
        let a = Array3::from_shape_fn((2, 3, 4), |(i, j, k)| (i * 100 + j * 10 + k) as f32);
        write(&path, &a).unwrap();
        let back = read::<f32>(&path).unwrap();
        assert_eq!(back.shape(), &[2, 3, 4]);
        assert_eq!(back[[1, 2, 3]], 123.0);
    }

    #[test]
    fn npz_reads_arrays_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.npz");
        let mut w = NpzWriter::new(File::create(&path).unwrap());
        w.add_array("step1:loss", &ndarray::arr0(1.5f32)).unwrap();
        w.add_array("labels", &array![2i64, 0]).unwrap();
        w.finish().unwrap();
        let mut npz = Npz::open(&path).unwrap();
        assert_eq!(npz.get::<f32>("step1:loss").unwrap()[[]], 1.5);
        assert_eq!(
            npz.get::<i64>("labels").unwrap().as_slice().unwrap(),
            &[2, 0]
        );
        let err = npz.get::<f32>("missing").unwrap_err().to_string();
        assert!(err.contains("r.npz") && err.contains("missing"), "{err}");
    }

    #[test]
    fn written_npz_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.npz");
        let a = ArrayD::from_elem(ndarray::IxDyn(&[2, 2]), 0.5f32);
        write_npz(&path, [("fc.weight", &a)]).unwrap();
        assert_eq!(
            Npz::open(&path).unwrap().get::<f32>("fc.weight").unwrap(),
            a
        );
    }

    #[test]
    fn reading_a_missing_file_names_it() {
        let err = read::<f32>(Path::new("/nonexistent/x.npy")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.npy"));
    }
}
