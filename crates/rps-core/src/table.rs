//! CSV files: UTF-8, a header row, one `serde` struct per row (the struct is the
//! schema), numbers with a dot decimal, so they open cleanly in any spreadsheet.

use std::fs::File;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::atomic;
use crate::error::{Error, Result, io};

/// Writes all `rows` to `path` atomically.
pub fn write<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    let csv_err = |source| Error::Csv {
        path: path.to_path_buf(),
        source,
    };
    atomic::write_file(path, |out| {
        let mut writer = csv::Writer::from_writer(out);
        for row in rows {
            writer.serialize(row).map_err(csv_err)?;
        }
        writer.flush().map_err(io("writing", path))
    })
}

/// Writes `rows` to `path` unless it holds them already
/// ([`atomic::write_if_changed`]); whether it wrote.
pub fn write_if_changed<T: Serialize>(path: &Path, rows: &[T]) -> Result<bool> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for row in rows {
        writer.serialize(row).map_err(|source| Error::Csv {
            path: path.to_path_buf(),
            source,
        })?;
    }
    let text = writer
        .into_inner()
        .map_err(|e| io("writing", path)(e.into_error()))?;
    atomic::write_if_changed(path, &text)
}

/// Writes a table whose columns are known only at run time (one per class),
/// atomically.
pub fn write_records(path: &Path, header: &[String], rows: &[Vec<String>]) -> Result<()> {
    let csv_err = |source| Error::Csv {
        path: path.to_path_buf(),
        source,
    };
    atomic::write_file(path, |out| {
        let mut writer = csv::Writer::from_writer(out);
        writer.write_record(header).map_err(csv_err)?;
        for row in rows {
            writer.write_record(row).map_err(csv_err)?;
        }
        writer.flush().map_err(io("writing", path))
    })
}

/// Reads every row of `path`.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let file = File::open(path).map_err(io("opening", path))?;
    csv::Reader::from_reader(file)
        .deserialize()
        .collect::<Result<_, _>>()
        .map_err(|source| Error::Csv {
            path: path.to_path_buf(),
            source,
        })
}

/// A CSV file that grows one flushed row at a time, so a spreadsheet can watch it.
pub struct Appender<T> {
    writer: csv::Writer<File>,
    path: std::path::PathBuf,
    row: std::marker::PhantomData<T>,
}

impl<T: Serialize + Default> Appender<T> {
    /// Starts `path` afresh with its header, so that even a file of no rows says
    /// what its columns are.
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).map_err(io("creating", path))?;
        let mut writer = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(file);
        writer
            .write_record(&header::<T>(path)?)
            .map_err(|source| Error::Csv {
                path: path.to_path_buf(),
                source,
            })?;
        writer.flush().map_err(io("writing", path))?;
        Ok(Self {
            writer,
            path: path.to_path_buf(),
            row: std::marker::PhantomData,
        })
    }

    pub fn push(&mut self, row: &T) -> Result<()> {
        self.writer.serialize(row).map_err(|source| Error::Csv {
            path: self.path.clone(),
            source,
        })?;
        self.writer.flush().map_err(io("writing", &self.path))
    }
}

/// The column names of `T`'s rows, as serde names its fields.
fn header<T: Serialize + Default>(path: &Path) -> Result<csv::StringRecord> {
    let mut probe = csv::Writer::from_writer(Vec::new());
    let csv_err = |source| Error::Csv {
        path: path.to_path_buf(),
        source,
    };
    probe.serialize(T::default()).map_err(csv_err)?;
    let bytes = probe
        .into_inner()
        .map_err(|e| io("writing", path)(e.into_error()))?;
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    Ok(reader.headers().map_err(csv_err)?.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    struct Row {
        class: String,
        value: f64,
    }

    #[test]
    fn rows_round_trip_with_header() {
        let (_dir, path) = crate::testing::temp_path("t.csv");
        let rows = vec![
            Row {
                class: "paper, wet".into(),
                value: 0.25,
            },
            Row {
                class: "rock".into(),
                value: 1e-7,
            },
        ];
        write(&path, &rows).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("class,value\n\"paper, wet\",0.25\n"),
            "{text}"
        );
        assert_eq!(read::<Row>(&path).unwrap(), rows);
    }

    #[test]
    fn appender_flushes_each_row() {
        let (_dir, path) = crate::testing::temp_path("e.csv");
        let mut app = Appender::create(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "class,value\n");
        app.push(&Row {
            class: "a".into(),
            value: 1.0,
        })
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "class,value\na,1.0\n"
        );
    }
}
