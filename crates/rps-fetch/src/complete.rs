//! Whether a fetched weights file is whole: a download cut short without a
//! Content-Length looks complete to the transfer, so the file itself must show it.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Checks that `path` is a complete zip archive (a `torch.save` file: every entry
/// reads with its CRC) or a complete `.safetensors` file (its header's data ends
/// where the file does).
pub fn check_weights_file(path: &Path) -> Result<()> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut magic = [0u8; 8];
    let head = file
        .read(&mut magic)
        .with_context(|| format!("reading {}", path.display()))?;
    if magic[..head].starts_with(b"PK") {
        check_zip(file).with_context(|| format!("{} is not a complete zip archive", path.display()))
    } else {
        let len = file.metadata()?.len();
        check_safetensors(&mut file, u64::from_le_bytes(magic), len).with_context(|| {
            format!(
                "{} is neither a complete zip archive (a .pth) nor a complete .safetensors file",
                path.display()
            )
        })
    }
}

fn check_zip(file: File) -> Result<()> {
    // As rps-export reads it: torch.save puts nothing before the archive, and zip's
    // own search for its start can be misled (see rps-export's `pth.rs`).
    let config = zip::read::Config {
        archive_offset: zip::read::ArchiveOffset::Known(0),
    };
    let mut zip = zip::ZipArchive::with_config(config, file)?;
    for index in 0..zip.len() {
        let mut entry = zip.by_index(index)?;
        let name = entry
            .name()
            .map_or_else(|_| format!("{index}"), |n| n.to_string());
        io::copy(&mut entry, &mut io::sink()).with_context(|| format!("entry {name:?}"))?;
    }
    Ok(())
}

/// `header_len` bytes of JSON after the first 8, then the data its `data_offsets`
/// describe, which must end with the file.
fn check_safetensors(file: &mut File, header_len: u64, file_len: u64) -> Result<()> {
    if header_len > file_len.saturating_sub(8) {
        bail!("a header of {header_len} bytes in a file of {file_len}");
    }
    let mut header = Vec::new();
    file.take(header_len).read_to_end(&mut header)?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)?;
    let end = header
        .values()
        .filter_map(|t| t.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    let data = file_len - 8 - header_len;
    if end != data {
        bail!("its header describes {end} bytes of data, the file holds {data}");
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

    #[test]
    fn a_whole_file_passes_and_a_cut_one_does_not() {
        let (_d, whole) = write(&safetensors(8, 8));
        check_weights_file(&whole).unwrap();
        let (_d, cut) = write(&safetensors(8, 5));
        let err = format!("{:#}", check_weights_file(&cut).unwrap_err());
        assert!(
            err.contains("describes 8 bytes") && err.contains("holds 5"),
            "{err}"
        );
        let mut zipped = io::Cursor::new(Vec::new());
        let mut writer = zip::ZipWriter::new(&mut zipped);
        writer
            .start_file("w/data.pkl", zip::write::SimpleFileOptions::default())
            .unwrap();
        io::Write::write_all(&mut writer, &[7u8; 4000]).unwrap();
        writer.finish().unwrap();
        let bytes = zipped.into_inner();
        let (_d, whole) = write(&bytes);
        check_weights_file(&whole).unwrap();
        let (_d, cut) = write(&bytes[..bytes.len() / 2]);
        let err = format!("{:#}", check_weights_file(&cut).unwrap_err());
        assert!(err.contains("not a complete zip archive"), "{err}");
        let (_d, text) = write(b"<html>not found</html>");
        assert!(check_weights_file(&text).is_err());
    }
}
