//! A focused reader of PyTorch state dicts saved by `torch.save` (a zip archive
//! holding `<folder>/data.pkl` and one `<folder>/data/<key>` file per storage).
//!
//! No well-kept crate reads these without a heavy tensor library (candle-core alone
//! adds minutes to a clean build), so this reads exactly what `state_dict()` files
//! contain: an `OrderedDict` of `torch._utils._rebuild_tensor_v2` calls on typed
//! storages. Anything else is refused with the opcode or global that was not expected.

use std::collections::HashMap;
use std::io::Read;

use thiserror::Error;

/// A float tensor, contiguous, in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

#[derive(Debug, Error)]
pub enum PthError {
    #[error("not a torch.save zip archive: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("reading the archive: {0}")]
    Io(#[from] std::io::Error),
    #[error("no <folder>/data.pkl in the archive")]
    NoPickle,
    #[error("pickle: {0}")]
    Pickle(String),
    #[error("tensor {key:?}: {message}")]
    Tensor { key: String, message: String },
}

/// Reads every float tensor of a `torch.save`d state dict, by key. Integer buffers
/// (`num_batches_tracked`) are left out: nothing here uses them.
pub fn read_state_dict(bytes: &[u8]) -> Result<Vec<(String, Tensor)>, PthError> {
    // torch.save never puts anything before the archive. Left to detect that itself,
    // zip 9 takes the classic end record's "CD size before the end" for the CD start,
    // which lands on the second entry whenever the first one (`STEM/data.pkl`, 76
    // bytes for a 21-letter file stem) is as long as the zip64 records behind the CD.
    let config = zip::read::Config {
        archive_offset: zip::read::ArchiveOffset::Known(0),
    };
    let mut archive = zip::ZipArchive::with_config(config, std::io::Cursor::new(bytes))?;
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
            return Err(PthError::Pickle(format!(
                "byte order {text:?} is not supported"
            )));
        }
    }
    let pickle = read_entry(&mut archive, &pickle_name)?;
    let Value::Dict(items) = Machine::default().run(&pickle)? else {
        return Err(PthError::Pickle("the top object is not a dict".into()));
    };
    let mut tensors = Vec::new();
    for (key, value) in items {
        let Value::Str(key) = key else {
            return Err(PthError::Pickle("a state dict key is not a string".into()));
        };
        let Value::Tensor(spec) = value else {
            return Err(PthError::Tensor {
                key,
                message: "not a tensor".into(),
            });
        };
        if spec.dtype != Dtype::F32 {
            continue;
        }
        let storage = read_entry(&mut archive, &format!("{folder}data/{}", spec.storage_key))?;
        let tensor = spec
            .materialize(&storage)
            .map_err(|message| PthError::Tensor {
                key: key.clone(),
                message,
            })?;
        tensors.push((key, tensor));
    }
    Ok(tensors)
}

fn read_entry(
    archive: &mut zip::ZipArchive<std::io::Cursor<&[u8]>>,
    name: &str,
) -> Result<Vec<u8>, PthError> {
    let mut entry = archive.by_name(name)?;
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    F32,
    Other,
}

/// What `_rebuild_tensor_v2(storage, offset, size, stride, ...)` describes.
#[derive(Debug, Clone, PartialEq)]
struct TensorSpec {
    storage_key: String,
    dtype: Dtype,
    storage_len: usize,
    offset: usize,
    shape: Vec<usize>,
    strides: Vec<usize>,
}

impl TensorSpec {
    fn materialize(&self, storage: &[u8]) -> Result<Tensor, String> {
        if storage.len() != self.storage_len * 4 {
            return Err(format!(
                "storage holds {} bytes, expected {} (truncated file?)",
                storage.len(),
                self.storage_len * 4
            ));
        }
        let values: Vec<f32> = storage
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let count: usize = self.shape.iter().product();
        let mut data = Vec::with_capacity(count);
        for flat in 0..count {
            let mut rest = flat;
            let mut at = self.offset;
            for (dim, stride) in self.shape.iter().zip(&self.strides).rev() {
                at += (rest % dim) * stride;
                rest /= dim;
            }
            data.push(
                *values
                    .get(at)
                    .ok_or("offset and strides run past the storage")?,
            );
        }
        Ok(Tensor {
            shape: self.shape.clone(),
            data,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Mark,
    None,
    Bool(bool),
    Int(i64),
    Str(String),
    Tuple(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String),
    /// A storage reference, as the persistent id tuple names it.
    Storage {
        key: String,
        dtype: Dtype,
        len: usize,
    },
    Tensor(TensorSpec),
}

#[derive(Default)]
struct Machine {
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
}

fn err<T>(message: impl Into<String>) -> Result<T, PthError> {
    Err(PthError::Pickle(message.into()))
}

impl Machine {
    fn run(mut self, bytes: &[u8]) -> Result<Value, PthError> {
        let mut input = Reader { bytes, at: 0 };
        loop {
            let op = input.u8()?;
            match op {
                0x80 => {
                    input.take(1)?; // PROTO n
                }
                0x95 => {
                    input.take(8)?; // FRAME length
                }
                b'c' => {
                    let module = input.line()?;
                    let name = input.line()?;
                    self.stack.push(Value::Global(format!("{module}.{name}")));
                }
                b'q' => self.memoize(input.u8()? as u32)?,
                b'r' => self.memoize(input.u32()?)?,
                b'h' => self.recall(input.u8()? as u32)?,
                b'j' => self.recall(input.u32()?)?,
                b'(' => self.stack.push(Value::Mark),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'K' => self.stack.push(Value::Int(input.u8()? as i64)),
                b'M' => {
                    let b = input.take(2)?;
                    self.stack
                        .push(Value::Int(u16::from_le_bytes([b[0], b[1]]) as i64));
                }
                b'J' => {
                    let b = input.take(4)?;
                    self.stack.push(Value::Int(
                        i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64
                    ));
                }
                0x8a => {
                    let n = input.u8()? as usize;
                    let b = input.take(n)?;
                    if n > 8 {
                        return err("integer too large");
                    }
                    let mut full = [if b.last().is_some_and(|x| x & 0x80 != 0) {
                        0xff
                    } else {
                        0
                    }; 8];
                    full[..n].copy_from_slice(b);
                    self.stack.push(Value::Int(i64::from_le_bytes(full)));
                }
                b'X' => {
                    let n = input.u32()? as usize;
                    let s = input.text(n)?;
                    self.stack.push(Value::Str(s));
                }
                0x8c => {
                    let n = input.u8()? as usize;
                    let s = input.text(n)?;
                    self.stack.push(Value::Str(s));
                }
                b't' => {
                    let items = self.pop_to_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let items = self.pop_n(n)?;
                    self.stack.push(Value::Tuple(items));
                }
                b'Q' => {
                    let id = self.pop()?;
                    self.stack.push(storage_from_persistent_id(id)?);
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    self.stack.push(call(func, args)?);
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.dict_top()?.push((key, value));
                }
                b'u' => {
                    let items = self.pop_to_mark()?;
                    if items.len() % 2 != 0 {
                        return err("SETITEMS with an odd number of items");
                    }
                    let mut pairs = items.into_iter();
                    let dict = self.dict_top()?;
                    while let (Some(k), Some(v)) = (pairs.next(), pairs.next()) {
                        dict.push((k, v));
                    }
                }
                b'b' => {
                    // BUILD sets attributes (the state dict's `_metadata`): not needed.
                    self.pop()?;
                }
                b'.' => return self.pop(),
                other => {
                    return err(format!(
                        "unsupported opcode 0x{other:02x} at byte {}",
                        input.at - 1
                    ));
                }
            }
        }
    }

    fn pop(&mut self) -> Result<Value, PthError> {
        self.stack.pop().map_or_else(|| err("stack underflow"), Ok)
    }

    fn pop_n(&mut self, n: usize) -> Result<Vec<Value>, PthError> {
        if self.stack.len() < n {
            return err("stack underflow");
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }

    fn pop_to_mark(&mut self) -> Result<Vec<Value>, PthError> {
        let mark = self
            .stack
            .iter()
            .rposition(|v| *v == Value::Mark)
            .map_or_else(|| err("no MARK on the stack"), Ok)?;
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        Ok(items)
    }

    fn dict_top(&mut self) -> Result<&mut Vec<(Value, Value)>, PthError> {
        match self.stack.last_mut() {
            Some(Value::Dict(items)) => Ok(items),
            _ => err("SETITEM on something that is not a dict"),
        }
    }

    fn memoize(&mut self, slot: u32) -> Result<(), PthError> {
        let top = self
            .stack
            .last()
            .map_or_else(|| err("PUT on an empty stack"), Ok)?;
        self.memo.insert(slot, top.clone());
        Ok(())
    }

    fn recall(&mut self, slot: u32) -> Result<(), PthError> {
        let value = self
            .memo
            .get(&slot)
            .map_or_else(|| err(format!("GET of unset memo slot {slot}")), Ok)?;
        self.stack.push(value.clone());
        Ok(())
    }
}

/// `('storage', torch.FloatStorage, key, location, numel)`
fn storage_from_persistent_id(id: Value) -> Result<Value, PthError> {
    match id {
        Value::Tuple(items) => match items.as_slice() {
            [
                Value::Str(kind),
                Value::Global(class),
                Value::Str(key),
                _,
                Value::Int(len),
            ] if kind == "storage" => Ok(Value::Storage {
                key: key.clone(),
                dtype: if class == "torch.FloatStorage" {
                    Dtype::F32
                } else {
                    Dtype::Other
                },
                len: *len as usize,
            }),
            _ => err(format!("unexpected persistent id {items:?}")),
        },
        other => err(format!("unexpected persistent id {other:?}")),
    }
}

fn call(func: Value, args: Value) -> Result<Value, PthError> {
    let (Value::Global(name), Value::Tuple(args)) = (&func, args) else {
        return err(format!("REDUCE on {func:?}"));
    };
    match name.as_str() {
        "collections.OrderedDict" => Ok(Value::Dict(Vec::new())),
        "torch._utils._rebuild_tensor_v2" => rebuild_tensor(args),
        other => err(format!("unsupported global {other}")),
    }
}

fn rebuild_tensor(args: Vec<Value>) -> Result<Value, PthError> {
    let (
        Some(Value::Storage { key, dtype, len }),
        Some(Value::Int(offset)),
        Some(shape),
        Some(strides),
    ) = (args.first(), args.get(1), args.get(2), args.get(3))
    else {
        return err("unexpected _rebuild_tensor_v2 arguments");
    };
    Ok(Value::Tensor(TensorSpec {
        storage_key: key.clone(),
        dtype: *dtype,
        storage_len: *len,
        offset: *offset as usize,
        shape: ints(shape)?,
        strides: ints(strides)?,
    }))
}

fn ints(value: &Value) -> Result<Vec<usize>, PthError> {
    let Value::Tuple(items) = value else {
        return err("expected a tuple of sizes");
    };
    items
        .iter()
        .map(|v| match v {
            Value::Int(i) if *i >= 0 => Ok(*i as usize),
            _ => err("expected a non-negative size"),
        })
        .collect()
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PthError> {
        let slice = self
            .bytes
            .get(self.at..self.at + n)
            .map_or_else(|| err("pickle ends early"), Ok)?;
        self.at += n;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, PthError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, PthError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn text(&mut self, n: usize) -> Result<String, PthError> {
        String::from_utf8(self.take(n)?.to_vec()).map_or_else(|_| err("string is not UTF-8"), Ok)
    }

    fn line(&mut self) -> Result<String, PthError> {
        let end = self.bytes[self.at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or_else(|| err("pickle ends early"), Ok)?;
        let s = self.text(end)?;
        self.at += 1;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_storage_is_gathered_row_major() {
        let spec = TensorSpec {
            storage_key: "0".into(),
            dtype: Dtype::F32,
            storage_len: 6,
            offset: 0,
            shape: vec![3, 2],
            strides: vec![1, 3], // a transposed [2,3]
        };
        let storage: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let t = spec.materialize(&storage).unwrap();
        assert_eq!(t.data, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        let err = spec.materialize(&storage[..20]).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn unknown_globals_are_refused() {
        // PROTO 2, GLOBAL 'os system', EMPTY_TUPLE, REDUCE, STOP
        let pickle = b"\x80\x02cos\nsystem\n)R.";
        let err = Machine::default().run(pickle).unwrap_err().to_string();
        assert!(err.contains("unsupported global os.system"), "{err}");
    }

    #[test]
    fn garbage_is_not_a_state_dict() {
        assert!(read_state_dict(b"not a zip").is_err());
    }
}
