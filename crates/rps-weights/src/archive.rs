//! `torch.save`'s zip archive (PyTorch 1.6 and later): `<folder>/data.pkl` and one
//! `<folder>/data/<key>` entry per storage, stored uncompressed.

use std::io::Read;

use crate::pickle::{self, Reader, Tensor, err};
use crate::{MAX_INFLATION, PthError, materialize_all};

/// Every zip archive starts so.
pub const MAGIC: &[u8] = b"PK\x03\x04";

/// The archive as `torch.save` writes it. torch.save never puts anything before the
/// archive. Left to detect that itself, zip 9 takes the classic end record's "CD
/// size before the end" for the CD start, which lands on the second entry whenever
/// the first one (`STEM/data.pkl`, 76 bytes for a 21-letter file stem) is as long as
/// the zip64 records behind the CD.
pub(crate) fn open<R: std::io::Read + std::io::Seek>(
    reader: R,
) -> zip::result::ZipResult<zip::ZipArchive<R>> {
    let config = zip::read::Config {
        archive_offset: zip::read::ArchiveOffset::Known(0),
    };
    zip::ZipArchive::with_config(config, reader)
}

/// Reads every float tensor of a zip-format state dict, by key.
pub(crate) fn read_state_dict(bytes: &[u8]) -> Result<Vec<(String, Tensor)>, PthError> {
    let mut archive = open(std::io::Cursor::new(bytes))?;
    // The folder inside differs between torch versions ("archive", the file stem, ...).
    let pickle_name = archive
        .file_names()
        .filter_map(Result::ok)
        .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .ok_or(PthError::NoPickle)?
        .to_string();
    let folder = pickle_name.trim_end_matches("data.pkl").to_string();
    if let Ok(mut order) = archive.by_name(&format!("{folder}byteorder")) {
        let mut text = String::new();
        order.read_to_string(&mut text)?;
        if text.trim() != "little" {
            return err(format!("byte order {text:?} is not supported"));
        }
    }
    let limit = (bytes.len() as u64).saturating_mul(MAX_INFLATION);
    let pickle = read_entry(&mut archive, &pickle_name, limit)?;
    let specs = pickle::state_dict(pickle::load(&mut Reader::new(&pickle))?)?;
    materialize_all(specs, limit, |spec| {
        read_entry(
            &mut archive,
            &format!("{folder}data/{}", spec.storage_key),
            limit,
        )
    })
}

/// The bytes of entry `name`, refused past `limit` (whatever its header claims).
fn read_entry(
    archive: &mut zip::ZipArchive<std::io::Cursor<&[u8]>>,
    name: &str,
    limit: u64,
) -> Result<Vec<u8>, PthError> {
    let entry = archive.by_name(name)?;
    let mut bytes = Vec::with_capacity(entry.size().min(limit) as usize);
    entry.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(PthError::Limit {
            what: format!("entry {name:?} unpacking to more than {limit} bytes"),
            limit,
        });
    }
    Ok(bytes)
}

/// Every entry of the archive reads with its CRC: the file is whole.
pub(crate) fn check_whole(bytes: &[u8]) -> Result<(), String> {
    let mut zip = open(std::io::Cursor::new(bytes)).map_err(|e| e.to_string())?;
    for index in 0..zip.len() {
        let mut entry = zip.by_index(index).map_err(|e| e.to_string())?;
        let name = entry
            .name()
            .map_or_else(|_| format!("{index}"), |n| n.to_string());
        std::io::copy(&mut entry, &mut std::io::sink())
            .map_err(|e| format!("entry {name:?}: {e}"))?;
    }
    Ok(())
}
