//! `.npy` / `.npz` files, readable by numpy, through `ndarray-npy`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom, Write};
use std::path::Path;

use ndarray::{ArrayBase, ArrayD, Data, Dimension};
use ndarray_npy::{
    NpzReader, ReadNpyExt, ReadableElement, ViewDataError, ViewElement, WritableElement,
    WriteDataError, WriteNpyExt,
};

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

/// Writes a `.npy` file row by row (rows along the first axis), so a large array is
/// streamed to disk rather than held in memory. The header comes from `ndarray-npy`.
pub struct RowWriter {
    out: std::io::BufWriter<File>,
    path: std::path::PathBuf,
    row_bytes: usize,
    rows: usize,
    written: usize,
}

impl RowWriter {
    /// Creates `path` for an array of `shape` with elements of type `A`.
    pub fn create<A: WritableElement + RawElement>(path: &Path, shape: &[usize]) -> Result<Self> {
        use std::io::{Seek, SeekFrom};
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(io("creating", path))?;
        ndarray_npy::write_zeroed_npy::<A, _>(&file, ndarray::IxDyn(shape)).map_err(|source| {
            Error::WriteNpy {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let row_bytes = shape[1..].iter().product::<usize>() * std::mem::size_of::<A>();
        let data_bytes = (row_bytes * shape[0]) as u64;
        let len = file.metadata().map_err(io("reading", path))?.len();
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        out.seek(SeekFrom::Start(len - data_bytes))
            .map_err(io("writing", path))?;
        Ok(Self {
            out,
            path: path.to_path_buf(),
            row_bytes,
            rows: shape[0],
            written: 0,
        })
    }

    /// Appends whole rows.
    pub fn write<A: RawElement>(&mut self, values: &[A]) -> Result<()> {
        use std::io::Write;
        let bytes = A::as_le_bytes(values);
        assert_eq!(bytes.len() % self.row_bytes, 0, "whole rows only");
        self.written += bytes.len() / self.row_bytes;
        assert!(self.written <= self.rows, "more rows than the shape holds");
        self.out
            .write_all(&bytes)
            .map_err(io("writing", &self.path))
    }

    /// Checks every row was written and flushes.
    pub fn finish(self) -> Result<()> {
        if self.written != self.rows {
            return Err(Error::Invalid {
                path: self.path,
                message: format!("wrote {} of {} rows", self.written, self.rows),
            });
        }
        let file = self
            .out
            .into_inner()
            .map_err(|e| io("writing", &self.path)(e.into_error()))?;
        file.sync_all().map_err(io("syncing", &self.path))
    }
}

/// Element types [`RowWriter`] writes as raw little-endian bytes.
pub trait RawElement: Copy {
    fn as_le_bytes(values: &[Self]) -> std::borrow::Cow<'_, [u8]>;
}

impl RawElement for u8 {
    fn as_le_bytes(values: &[Self]) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(values)
    }
}

impl RawElement for f32 {
    fn as_le_bytes(values: &[Self]) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
}

impl RawElement for i64 {
    fn as_le_bytes(values: &[Self]) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
}

/// How the frozen layers' output is stored (`FEATURES`); phase 2 computes in f32
/// either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    /// Half the bytes, about three significant digits.
    F16,
}

impl Precision {
    pub const ALL: [Precision; 2] = [Precision::F32, Precision::F16];

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }

    /// Bytes an element takes.
    pub fn bytes(self) -> usize {
        match self {
            Precision::F32 => std::mem::size_of::<f32>(),
            Precision::F16 => std::mem::size_of::<F16>(),
        }
    }

    /// `--features`'s value, or the choices.
    pub fn flag(name: &str) -> std::result::Result<Precision, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                format!(
                    "expected one of {}",
                    Self::ALL.map(Precision::name).join(", ")
                )
            })
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A float16 element (`FEATURES=f16`): half the bytes of an f32 feature, read back as
/// f32 for computing; numpy reads the file as `float16`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[repr(transparent)]
pub struct F16(pub half::f16);

/// `values` rounded to float16 (to nearest, ties to even, as numpy's `astype`).
pub fn halves(values: &[f32]) -> Vec<F16> {
    values
        .iter()
        .map(|&v| F16(half::f16::from_f32(v)))
        .collect()
}

/// numpy's descriptor of a little-endian float16.
const F16_DESCRIPTOR: &str = "<f2";

impl RawElement for F16 {
    fn as_le_bytes(values: &[Self]) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Owned(values.iter().flat_map(|v| v.0.to_le_bytes()).collect())
    }
}

impl WritableElement for F16 {
    fn type_descriptor() -> py_literal::Value {
        py_literal::Value::String(F16_DESCRIPTOR.into())
    }

    fn write<W: Write>(&self, mut writer: W) -> std::result::Result<(), WriteDataError> {
        Ok(writer.write_all(&self.0.to_le_bytes())?)
    }

    fn write_slice<W: Write>(
        slice: &[Self],
        mut writer: W,
    ) -> std::result::Result<(), WriteDataError> {
        Ok(writer.write_all(&Self::as_le_bytes(slice))?)
    }
}

impl ViewElement for F16 {
    fn bytes_as_slice<'a>(
        bytes: &'a [u8],
        type_desc: &py_literal::Value,
        len: usize,
    ) -> std::result::Result<&'a [Self], ViewDataError> {
        match type_desc {
            py_literal::Value::String(s) if s == F16_DESCRIPTOR => {}
            other => return Err(ViewDataError::WrongDescriptor(other.clone())),
        }
        if cfg!(target_endian = "big") {
            return Err(ViewDataError::NonNativeEndian);
        }
        let expected = len * std::mem::size_of::<Self>();
        if bytes.len() < expected {
            return Err(ViewDataError::MissingBytes(expected - bytes.len()));
        }
        if bytes.len() > expected {
            return Err(ViewDataError::ExtraBytes(bytes.len() - expected));
        }
        if bytes.as_ptr().align_offset(std::mem::align_of::<Self>()) != 0 {
            return Err(ViewDataError::Misaligned);
        }
        // Safety: the length and alignment are checked; every bit pattern is an f16,
        // and F16 is one f16 (repr(transparent)).
        Ok(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast(), len) })
    }
}

/// A memory-mapped `.npy` file: rows are read as the OS pages them in, so memory
/// stays bounded by what is in use, not by the file size.
pub struct Mapped {
    map: memmap2::Mmap,
    path: std::path::PathBuf,
    /// Bytes of rows read since the mapping's pages were last let go.
    read: std::sync::atomic::AtomicUsize,
}

/// How many bytes of rows are read between two [`Mapped::read_rows`] releases: rows
/// read in random order map several times their bytes (the kernel maps the pages
/// around each one), so this bounds a stage's mapped pages to a few hundred MB.
const RELEASE_EVERY: usize = 64 << 20;

impl Mapped {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(io("opening", path))?;
        // Safety: the pipeline's files are replaced by rename, never modified in place.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io("mapping", path))?;
        Ok(Self {
            map,
            path: path.to_path_buf(),
            read: Default::default(),
        })
    }

    /// Notes `bytes` of rows read; every [`RELEASE_EVERY`] bytes, lets the mapping's
    /// pages go. A mapped page counts in the process's resident memory for as long as
    /// it stays mapped, so a pass over a 15 GB cache would otherwise end holding 15
    /// GB; let go, the pages stay in the page cache, and a row read again costs no
    /// disk read.
    pub fn read_rows(&self, bytes: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.read.fetch_add(bytes, Relaxed) + bytes < RELEASE_EVERY {
            return;
        }
        self.read.store(0, Relaxed);
        // Safety: a read-only shared mapping of a file that is replaced by rename,
        // never written in place: a page let go reads back the same bytes. Failing
        // only keeps the pages.
        let _ = unsafe {
            self.map
                .unchecked_advise(memmap2::UncheckedAdvice::DontNeed)
        };
    }

    /// The whole array as a view.
    pub fn view<'a, A>(&'a self) -> Result<ndarray::ArrayViewD<'a, A>>
    where
        ndarray::ArrayViewD<'a, A>: ndarray_npy::ViewNpyExt<'a>,
    {
        use ndarray_npy::ViewNpyExt;
        ndarray::ArrayViewD::<A>::view_npy(&self.map).map_err(|e| Error::Invalid {
            path: self.path.clone(),
            message: format!("not a readable .npy of the expected type: {e}"),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
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
        write_npz_to(out, arrays).map_err(|e| invalid(&e))?;
        Ok(())
    })
}

/// Writes `arrays` as an `.npz` archive into `out`. After a failed write, the
/// archive takes what it still writes without writing it: dropping an unfinished
/// archive finishes it, and the zip writer prints its own "ZipWriter drop failed"
/// when that fails too, beside the error this returns.
pub fn write_npz_to<'a, A, I, W>(out: W, arrays: I) -> std::result::Result<(), String>
where
    A: WritableElement + 'a,
    I: IntoIterator<Item = (&'a str, &'a ArrayD<A>)>,
    W: Write + Seek,
{
    let mut quiet = QuietAfterError::new(out);
    let written = (|| {
        let mut npz = ndarray_npy::NpzWriter::new(&mut quiet);
        for (name, array) in arrays {
            npz.add_array(name, array).map_err(|e| e.to_string())?;
        }
        npz.finish().map_err(|e| e.to_string())?;
        Ok(())
    })();
    // The first failure, as the system said it: the archive's own word for it
    // can be as bare as "i/o error".
    match quiet.error {
        Some(error) => Err(error.to_string()),
        None => written,
    }
}

/// A writer that, once a write or seek has failed, takes every later one without
/// doing it, keeping the position the archive expects.
struct QuietAfterError<W> {
    inner: W,
    /// The first failure, which the archive may not have passed on.
    error: Option<std::io::Error>,
    position: u64,
    end: u64,
}

impl<W> QuietAfterError<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            error: None,
            position: 0,
            end: 0,
        }
    }

    /// `result`, its error kept as the first failure.
    fn noted<T>(&mut self, result: std::io::Result<T>) -> std::io::Result<T> {
        result.inspect_err(|e| {
            self.error = Some(std::io::Error::new(e.kind(), e.to_string()));
        })
    }

    fn moved_to(&mut self, position: u64) -> u64 {
        self.position = position;
        self.end = self.end.max(position);
        position
    }
}

impl<W: Write> Write for QuietAfterError<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = match self.error {
            Some(_) => buf.len(),
            None => {
                let result = self.inner.write(buf);
                self.noted(result)?
            }
        };
        self.moved_to(self.position + written as u64);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.error {
            Some(_) => Ok(()),
            None => {
                let result = self.inner.flush();
                self.noted(result)
            }
        }
    }
}

impl<W: Seek> Seek for QuietAfterError<W> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let position = match (&self.error, to) {
            (None, _) => {
                let result = self.inner.seek(to);
                self.noted(result)?
            }
            (Some(_), SeekFrom::Start(at)) => at,
            (Some(_), SeekFrom::Current(by)) => self.position.saturating_add_signed(by),
            (Some(_), SeekFrom::End(by)) => self.end.saturating_add_signed(by),
        };
        Ok(self.moved_to(position))
    }
}

/// Float tensors by PyTorch name, as the weights and checkpoint `.npz` files hold them.
pub type Tensors = BTreeMap<String, ArrayD<f32>>;

/// Writes `tensors` as an `.npz` by name, atomically.
pub fn write_tensors(path: &Path, tensors: &Tensors) -> Result<()> {
    write_npz(path, tensors.iter().map(|(k, v)| (k.as_str(), v)))
}

/// Reads every array of an `.npz` as float tensors by name.
pub fn read_tensors(path: &Path) -> Result<Tensors> {
    let mut npz = Npz::open(path)?;
    npz.names()?
        .into_iter()
        .map(|name| Ok((name.clone(), npz.get::<f32>(&name)?)))
        .collect()
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
        let (_dir, path) = crate::testing::temp_path("a.npy");
        let a = Array3::from_shape_fn((2, 3, 4), |(i, j, k)| (i * 100 + j * 10 + k) as f32);
        write(&path, &a).unwrap();
        let back = read::<f32>(&path).unwrap();
        assert_eq!(back.shape(), &[2, 3, 4]);
        assert_eq!(back[[1, 2, 3]], 123.0);
    }

    #[test]
    fn npz_reads_arrays_by_name() {
        let (_dir, path) = crate::testing::temp_path("r.npz");
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
    fn rows_stream_into_a_readable_npy() {
        let (_dir, path) = crate::testing::temp_path("rows.npy");
        let mut w = RowWriter::create::<f32>(&path, &[3, 2, 2]).unwrap();
        w.write(&[0.0f32, 1.0, 2.0, 3.0]).unwrap();
        w.write(&[4.0f32, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0])
            .unwrap();
        w.finish().unwrap();
        let back = read::<f32>(&path).unwrap();
        assert_eq!(back.shape(), &[3, 2, 2]);
        assert_eq!(back[[2, 1, 1]], 11.0);
        let mapped = Mapped::open(&path).unwrap();
        assert_eq!(mapped.view::<f32>().unwrap()[[1, 0, 1]], 5.0);
        assert!(mapped.view::<u8>().is_err());
    }

    #[test]
    fn float16_rows_read_back_as_written_and_as_no_other_type() {
        let (_dir, path) = crate::testing::temp_path("half.npy");
        let values: Vec<F16> = [0.5f32, -2.0, 65504.0, 1e-3]
            .iter()
            .map(|&v| F16(half::f16::from_f32(v)))
            .collect();
        let mut w = RowWriter::create::<F16>(&path, &[2, 2]).unwrap();
        w.write(&values).unwrap();
        w.finish().unwrap();
        let mapped = Mapped::open(&path).unwrap();
        let view = mapped.view::<F16>().unwrap();
        assert_eq!(view.shape(), &[2, 2]);
        assert_eq!(view[[1, 0]].0.to_f32(), 65504.0);
        assert_eq!(view[[1, 1]], values[3]);
        assert!(mapped.view::<f32>().is_err());
        let text = std::fs::read(&path).unwrap();
        assert!(text.windows(4).any(|w| w == b"<f2'"), "numpy's float16");
    }

    #[test]
    fn a_short_row_stream_is_an_error() {
        let (_dir, path) = crate::testing::temp_path("rows.npy");
        let mut w = RowWriter::create::<u8>(&path, &[2, 3]).unwrap();
        w.write(&[1u8, 2, 3]).unwrap();
        assert!(
            w.finish()
                .unwrap_err()
                .to_string()
                .contains("wrote 1 of 2 rows")
        );
    }

    #[test]
    fn written_npz_reads_back() {
        let (_dir, path) = crate::testing::temp_path("w.npz");
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
