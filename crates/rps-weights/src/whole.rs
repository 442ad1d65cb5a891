//! Whether a fetched weights file is whole: a download cut short without a
//! Content-Length looks complete to the transfer, so the file itself must show it.

use std::path::Path;

use crate::{Error, Format, archive, legacy};

/// Checks that `path` is a complete weights file: a zip archive every entry of which
/// reads with its CRC, a legacy `torch.save` file whose storages are all there and
/// end with it, or a `.safetensors` file whose header's data ends where the file
/// does.
pub fn check_whole(path: &Path) -> Result<(), Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read {
        path: path.into(),
        source,
    })?;
    let format = Format::of(&bytes);
    let checked = match format {
        Format::Archive => archive::check_whole(&bytes),
        Format::Legacy => legacy::check_whole(&bytes).map_err(|e| e.to_string()),
        Format::Safetensors => check_safetensors(&bytes),
    };
    checked.map_err(|message| Error::Incomplete {
        path: path.into(),
        format,
        message,
    })
}

/// A little-endian header length, that many bytes of JSON, then the data its
/// `data_offsets` describe, which must end with the file.
fn check_safetensors(bytes: &[u8]) -> Result<(), String> {
    let file_len = bytes.len() as u64;
    let header_len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(|| format!("a file of {file_len} bytes has no header"))?;
    if header_len > file_len - 8 {
        return Err(format!(
            "a header of {header_len} bytes in a file of {file_len}"
        ));
    }
    let header = &bytes[8..8 + header_len as usize];
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| e.to_string())?;
    let end = header
        .values()
        .filter_map(|t| t.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    let data = file_len - 8 - header_len;
    if end != data {
        return Err(format!(
            "its header describes {end} bytes of data, the file holds {data}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.bin");
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    fn safetensors(data_len: usize, keep: usize) -> Vec<u8> {
        let header =
            format!(r#"{{"w":{{"dtype":"F32","shape":[2],"data_offsets":[0,{data_len}]}}}}"#);
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        bytes.extend(vec![0u8; keep]);
        bytes
    }

    fn refusal(bytes: &[u8]) -> String {
        let (_d, path) = write(bytes);
        check_whole(&path).unwrap_err().to_string()
    }

    #[test]
    fn a_whole_file_passes_and_a_cut_one_does_not() {
        let (_d, whole) = write(&safetensors(8, 8));
        check_whole(&whole).unwrap();
        let err = refusal(&safetensors(8, 5));
        assert!(
            err.contains("describes 8 bytes") && err.contains("holds 5"),
            "{err}"
        );
        let mut zipped = std::io::Cursor::new(Vec::new());
        let mut writer = zip::ZipWriter::new(&mut zipped);
        writer
            .start_file("w/data.pkl", zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut writer, &[7u8; 4000]).unwrap();
        writer.finish().unwrap();
        let bytes = zipped.into_inner();
        let (_d, whole) = write(&bytes);
        check_whole(&whole).unwrap();
        let err = refusal(&bytes[..bytes.len() / 2]);
        assert!(err.contains("not a complete zip archive"), "{err}");
        assert!(refusal(b"<html>not found</html>").contains(".safetensors"));
        assert!(refusal(b"short").contains("no header"));
    }
}
