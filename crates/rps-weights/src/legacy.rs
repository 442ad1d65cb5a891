//! `torch.save`'s legacy format (before PyTorch 1.6, and `_use_new_zipfile_serialization
//! =False` since), as `torch/serialization.py`'s `_legacy_save` writes it: five
//! pickles one after another (a magic number, the protocol version 1001, the
//! system's byte order and type sizes, the state dict itself, the list of its storage
//! keys), then each storage in that list's order as an 8-byte little-endian element
//! count followed by its elements.

use std::collections::HashMap;

use crate::pickle::{self, Dtype, Reader, Tensor, TensorSpec, Value, err};
use crate::{MAX_INFLATION, PthError, materialize_all};

/// The first pickle: `PROTO 2, LONG1 0x1950a86a20f9469cfc6c, STOP`, torch's magic
/// number, in the 15 bytes `_legacy_save` writes it as.
pub const MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.";
/// The protocol version the second pickle holds.
const PROTOCOL_VERSION: i64 = 1001;

/// The state dict's tensors and where each storage's bytes are in the file.
struct Layout<'a> {
    tensors: Vec<(String, TensorSpec)>,
    storages: HashMap<String, &'a [u8]>,
}

/// Reads every float tensor of a legacy-format state dict, by key.
pub(crate) fn read_state_dict(bytes: &[u8]) -> Result<Vec<(String, Tensor)>, PthError> {
    let Layout { tensors, storages } = layout(bytes)?;
    let limit = (bytes.len() as u64).saturating_mul(MAX_INFLATION);
    materialize_all(tensors, limit, |spec| {
        Ok(storages[&spec.storage_key].to_vec())
    })
}

/// The file holds its five pickles and every storage they name, and nothing after.
pub(crate) fn check_whole(bytes: &[u8]) -> Result<(), PthError> {
    layout(bytes).map(drop)
}

fn layout(bytes: &[u8]) -> Result<Layout<'_>, PthError> {
    if !bytes.starts_with(MAGIC) {
        return err("not torch.save's legacy format (no magic number)");
    }
    let mut input = Reader::new(bytes);
    input.take(MAGIC.len())?;
    match pickle::load(&mut input)? {
        Value::Int(PROTOCOL_VERSION) => {}
        other => {
            return err(format!(
                "protocol version {}, expected {PROTOCOL_VERSION}",
                other.describe()
            ));
        }
    }
    check_system(pickle::load(&mut input)?)?;
    let tensors = pickle::state_dict(pickle::load(&mut input)?)?;
    let Value::List(keys) = pickle::load(&mut input)? else {
        return err("the list of storage keys is not a list");
    };
    // What each storage holds, from the tensors that view it.
    let described: HashMap<&str, (Dtype, usize)> = tensors
        .iter()
        .map(|(_, spec)| (spec.storage_key.as_str(), (spec.dtype, spec.storage_len)))
        .collect();
    let mut storages = HashMap::new();
    for key in keys {
        let Value::Str(key) = key else {
            return err(format!("storage key {} is not a string", key.describe()));
        };
        let Some(&(dtype, len)) = described.get(key.as_str()) else {
            return err(format!("storage {key:?} is viewed by no tensor"));
        };
        let count = input.u64()?;
        if count != len as u64 {
            return err(format!(
                "storage {key:?} holds {count} elements, its tensors say {len}"
            ));
        }
        let width = dtype
            .width()
            .map_or_else(|| err(format!("storage {key:?} is of an unknown type")), Ok)?;
        let size = len
            .checked_mul(width)
            .map_or_else(|| err(format!("storage {key:?} of {len} elements")), Ok)?;
        let data = input
            .take(size)
            .map_err(|_| PthError::Pickle(format!("storage {key:?} is cut short")))?;
        if storages.insert(key.clone(), data).is_some() {
            return err(format!("storage {key:?} is listed twice"));
        }
    }
    if let Some((_, spec)) = tensors
        .iter()
        .find(|(_, spec)| !storages.contains_key(&spec.storage_key))
    {
        return err(format!("storage {:?} is not in the file", spec.storage_key));
    }
    let after = bytes.len() - input.at;
    if after > 0 {
        return err(format!("{after} bytes follow the last storage"));
    }
    Ok(Layout { tensors, storages })
}

/// The sizes and byte order the file was written with: storages are read as
/// little-endian.
fn check_system(info: Value) -> Result<(), PthError> {
    let Value::Dict(items) = &info else {
        return err(format!("system information {}", info.describe()));
    };
    let little_endian = items
        .iter()
        .any(|(k, v)| *k == Value::Str("little_endian".into()) && *v == Value::Bool(true));
    if !little_endian {
        return err("written on a big-endian machine; not supported");
    }
    Ok(())
}
