//! A focused reader of PyTorch state dicts saved by `torch.save` (a zip archive
//! holding `<folder>/data.pkl` and one `<folder>/data/<key>` file per storage).
//!
//! No well-kept crate reads these without a heavy tensor library (candle-core alone
//! adds minutes to a clean build), so this reads exactly what `state_dict()` files
//! contain: an `OrderedDict` of `torch._utils._rebuild_tensor_v2` calls on typed
//! storages. Anything else is refused with the opcode or global that was not expected.
//!
//! The file is untrusted: what it can make the reader do is bounded (nesting depth,
//! values made, bytes unpacked and materialized, elements per tensor), each refusal
//! naming the limit.

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
    #[error("{what} exceeds the reader's limit of {limit}; not a state dict torch.save wrote")]
    Limit { what: String, limit: u64 },
}

/// Containers nest at most this deep (a state dict needs 4).
pub const MAX_DEPTH: usize = 64;
/// Values the pickle may make, per byte of the pickle (a state dict makes about 0.2).
pub const VALUES_PER_BYTE: usize = 16;
/// An entry unpacks to at most this many times the archive's size (torch.save
/// stores entries uncompressed).
pub const MAX_INFLATION: u64 = 16;

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
    let limit = (bytes.len() as u64).saturating_mul(MAX_INFLATION);
    let pickle = read_entry(&mut archive, &pickle_name, limit)?;
    let Value::Dict(items) = Machine::for_pickle(&pickle).run(&pickle)? else {
        return Err(PthError::Pickle("the top object is not a dict".into()));
    };
    let mut tensors = Vec::new();
    let mut materialized = 0u64;
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
        let storage_name = format!("{folder}data/{}", spec.storage_key);
        let storage = read_entry(&mut archive, &storage_name, limit)?;
        let tensor = spec
            .materialize(&storage)
            .map_err(|message| PthError::Tensor {
                key: key.clone(),
                message,
            })?;
        // Tensors may view one storage many times: their bytes, too, are bounded.
        materialized += tensor.data.len() as u64 * 4;
        if materialized > limit {
            return Err(PthError::Limit {
                what: format!("tensors of more than {limit} bytes"),
                limit,
            });
        }
        tensors.push((key, tensor));
    }
    Ok(tensors)
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
        if self.storage_len.checked_mul(4) != Some(storage.len()) {
            return Err(format!(
                "storage holds {} bytes, expected {} float32 values (truncated file?)",
                storage.len(),
                self.storage_len
            ));
        }
        if self.shape.len() != self.strides.len() {
            return Err(format!(
                "shape {:?} and strides {:?} differ in length",
                self.shape, self.strides
            ));
        }
        let count = self
            .shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .filter(|&n| n <= self.storage_len)
            .ok_or_else(|| {
                format!(
                    "shape {:?} has more elements than its storage's {}",
                    self.shape, self.storage_len
                )
            })?;
        if count > 0
            && self
                .last_index()
                .is_none_or(|last| last >= self.storage_len)
        {
            return Err("offset and strides run past the storage".into());
        }
        let values: Vec<f32> = storage
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let mut data = Vec::with_capacity(count);
        for flat in 0..count {
            let mut rest = flat;
            let mut at = self.offset;
            for (dim, stride) in self.shape.iter().zip(&self.strides).rev() {
                at += (rest % dim) * stride;
                rest /= dim;
            }
            data.push(values[at]);
        }
        Ok(Tensor {
            shape: self.shape.clone(),
            data,
        })
    }

    /// The storage index of the tensor's last element; `None` when it overflows.
    fn last_index(&self) -> Option<usize> {
        self.shape
            .iter()
            .zip(&self.strides)
            .try_fold(self.offset, |at, (&dim, &stride)| {
                at.checked_add(dim.checked_sub(1)?.checked_mul(stride)?)
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

impl Value {
    /// How deeply containers nest in this value (0 for a scalar).
    fn depth(&self) -> usize {
        match self {
            Value::Tuple(items) => 1 + items.iter().map(Value::depth).max().unwrap_or(0),
            Value::Dict(items) => {
                1 + items
                    .iter()
                    .map(|(k, v)| k.depth().max(v.depth()))
                    .max()
                    .unwrap_or(0)
            }
            _ => 0,
        }
    }

    /// The values this one is made of, itself included.
    fn count(&self) -> usize {
        match self {
            Value::Tuple(items) => 1 + items.iter().map(Value::count).sum::<usize>(),
            Value::Dict(items) => {
                1 + items
                    .iter()
                    .map(|(k, v)| k.count() + v.count())
                    .sum::<usize>()
            }
            _ => 1,
        }
    }

    /// A short description for messages: a hostile value may be huge.
    fn describe(&self) -> String {
        let text = format!("{self:?}");
        match text.char_indices().nth(120) {
            Some((end, _)) => format!("{}...", &text[..end]),
            None => text,
        }
    }
}

struct Machine {
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
    /// Values made so far (memo copies included), against `budget`.
    made: usize,
    budget: usize,
}

fn err<T>(message: impl Into<String>) -> Result<T, PthError> {
    Err(PthError::Pickle(message.into()))
}

impl Machine {
    /// A machine whose budget of values scales with the pickle's length.
    fn for_pickle(pickle: &[u8]) -> Self {
        Self {
            stack: Vec::new(),
            memo: HashMap::new(),
            made: 0,
            budget: pickle.len().saturating_mul(VALUES_PER_BYTE).max(1 << 12),
        }
    }

    fn run(mut self, bytes: &[u8]) -> Result<Value, PthError> {
        let mut input = Reader { bytes, at: 0 };
        loop {
            if self.made > self.budget {
                return Err(PthError::Limit {
                    what: format!(
                        "a pickle of {} bytes making {} values",
                        bytes.len(),
                        self.made
                    ),
                    limit: self.budget as u64,
                });
            }
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
                    self.push(Value::Global(format!("{module}.{name}")));
                }
                b'q' => self.memoize(input.u8()? as u32)?,
                b'r' => self.memoize(input.u32()?)?,
                b'h' => self.recall(input.u8()? as u32)?,
                b'j' => self.recall(input.u32()?)?,
                b'(' => self.push(Value::Mark),
                b')' => self.push(Value::Tuple(Vec::new())),
                b'}' => self.push(Value::Dict(Vec::new())),
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'K' => self.push(Value::Int(input.u8()? as i64)),
                b'M' => {
                    let b = input.take(2)?;
                    self.push(Value::Int(u16::from_le_bytes([b[0], b[1]]) as i64));
                }
                b'J' => {
                    let b = input.take(4)?;
                    self.push(Value::Int(
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
                    self.push(Value::Int(i64::from_le_bytes(full)));
                }
                b'X' => {
                    let n = input.u32()? as usize;
                    let s = input.text(n)?;
                    self.push(Value::Str(s));
                }
                0x8c => {
                    let n = input.u8()? as usize;
                    let s = input.text(n)?;
                    self.push(Value::Str(s));
                }
                b't' => {
                    let items = self.pop_to_mark()?;
                    self.push(nested(items)?);
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let items = self.pop_n(n)?;
                    self.push(nested(items)?);
                }
                b'Q' => {
                    let id = self.pop()?;
                    self.push(storage_from_persistent_id(id)?);
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    self.push(call(func, args)?);
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    check_depth(&[&key, &value])?;
                    self.dict_top()?.push((key, value));
                }
                b'u' => {
                    let items = self.pop_to_mark()?;
                    if items.len() % 2 != 0 {
                        return err("SETITEMS with an odd number of items");
                    }
                    check_depth(&items.iter().collect::<Vec<_>>())?;
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

    fn push(&mut self, value: Value) {
        self.made += 1;
        self.stack.push(value);
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
            .rposition(|v| matches!(v, Value::Mark))
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
        self.made += top.count();
        self.memo.insert(slot, top.clone());
        Ok(())
    }

    fn recall(&mut self, slot: u32) -> Result<(), PthError> {
        let value = self
            .memo
            .get(&slot)
            .map_or_else(|| err(format!("GET of unset memo slot {slot}")), Ok)?
            .clone();
        self.made += value.count();
        self.stack.push(value);
        Ok(())
    }
}

/// A tuple of `items`, refused when it would nest deeper than [`MAX_DEPTH`].
fn nested(items: Vec<Value>) -> Result<Value, PthError> {
    check_depth(&items.iter().collect::<Vec<_>>())?;
    Ok(Value::Tuple(items))
}

/// Refuses to put `items` into a container when that would nest past [`MAX_DEPTH`].
fn check_depth(items: &[&Value]) -> Result<(), PthError> {
    if items.iter().any(|v| v.depth() >= MAX_DEPTH) {
        return Err(PthError::Limit {
            what: "nesting".into(),
            limit: MAX_DEPTH as u64,
        });
    }
    Ok(())
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
                len: usize::try_from(*len)
                    .map_or_else(|_| err(format!("storage of {len} elements")), Ok)?,
            }),
            _ => err(format!(
                "unexpected persistent id {}",
                Value::Tuple(items).describe()
            )),
        },
        other => err(format!("unexpected persistent id {}", other.describe())),
    }
}

fn call(func: Value, args: Value) -> Result<Value, PthError> {
    let (Value::Global(name), Value::Tuple(args)) = (&func, args) else {
        return err(format!("REDUCE on {}", func.describe()));
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
        offset: usize::try_from(*offset)
            .map_or_else(|_| err(format!("storage offset {offset}")), Ok)?,
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

    /// Why the pickle machine refuses `pickle`.
    fn refusal(pickle: &[u8]) -> String {
        Machine::for_pickle(pickle)
            .run(pickle)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn unknown_globals_are_refused() {
        // PROTO 2, GLOBAL 'os system', EMPTY_TUPLE, REDUCE, STOP
        let pickle = b"\x80\x02cos\nsystem\n)R.";
        let err = refusal(pickle);
        assert!(err.contains("unsupported global os.system"), "{err}");
    }

    fn spec(shape: Vec<usize>, strides: Vec<usize>, storage_len: usize) -> TensorSpec {
        TensorSpec {
            storage_key: "0".into(),
            dtype: Dtype::F32,
            storage_len,
            offset: 0,
            shape,
            strides,
        }
    }

    #[test]
    fn element_counts_past_the_storage_or_usize_are_refused() {
        let storage = [0u8; 16];
        let huge = spec(vec![1 << 33, 1 << 33], vec![1, 1], 4);
        let err = huge.materialize(&storage).unwrap_err();
        assert!(err.contains("more elements than its storage"), "{err}");
        let big = spec(vec![1 << 20, 1 << 20], vec![1 << 20, 1], 4);
        assert!(big.materialize(&storage).is_err());
        let wrapping = spec(vec![2], vec![usize::MAX], 4);
        let err = wrapping.materialize(&storage).unwrap_err();
        assert!(err.contains("run past the storage"), "{err}");
        let claimed = spec(vec![1], vec![1], usize::MAX);
        assert!(claimed.materialize(&storage).is_err());
        let mismatched = spec(vec![2, 2], vec![1], 4);
        assert!(mismatched.materialize(&storage).is_err());
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        // EMPTY_TUPLE, then TUPLE1 a hundred thousand times, STOP.
        let mut pickle = b"\x80\x02)".to_vec();
        pickle.extend(std::iter::repeat_n(0x85, 100_000));
        pickle.push(b'.');
        let err = refusal(&pickle);
        assert!(err.contains("nesting") && err.contains("64"), "{err}");
        // The same through SETITEM: a dict in a dict in a dict ...
        let mut pickle = b"\x80\x02}".to_vec();
        for _ in 0..10_000 {
            pickle.extend(b"K\x00}");
        }
        pickle.extend(std::iter::repeat_n(b's', 10_000));
        pickle.push(b'.');
        let err = refusal(&pickle);
        assert!(err.contains("nesting"), "{err}");
    }

    #[test]
    fn memo_copies_count_against_the_budget() {
        // A tuple doubled forty times through PUT 0 / GET 0: 2^40 values unbounded.
        let mut pickle = b"\x80\x02)q\x00".to_vec();
        for _ in 0..40 {
            pickle.extend(b"h\x00h\x00\x86q\x00");
        }
        pickle.push(b'.');
        let err = refusal(&pickle);
        assert!(err.contains("limit"), "{err}");
    }

    #[test]
    fn an_entry_larger_than_its_limit_is_refused() {
        let mut zipped = std::io::Cursor::new(Vec::new());
        let mut writer = zip::ZipWriter::new(&mut zipped);
        let deflated = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        writer.start_file("w/data.pkl", deflated).unwrap();
        std::io::Write::write_all(&mut writer, &vec![b'.'; 1 << 20]).unwrap();
        writer.finish().unwrap();
        let bytes = zipped.into_inner();
        assert!((bytes.len() as u64) * MAX_INFLATION < 1 << 20);
        let err = read_state_dict(&bytes).unwrap_err().to_string();
        assert!(err.contains("w/data.pkl") && err.contains("limit"), "{err}");
    }

    /// A state dict of `tensors` float tensors, each all of one storage of
    /// `storage_len` values.
    fn views_of_one_storage(tensors: usize, storage_len: u16) -> Vec<u8> {
        let mut pickle = b"\x80\x02}".to_vec();
        let n = storage_len.to_le_bytes();
        for i in 0..tensors {
            let key = format!("k{i}");
            pickle.extend([0x8c, key.len() as u8]);
            pickle.extend(key.as_bytes());
            pickle.extend(b"ctorch._utils\n_rebuild_tensor_v2\n(");
            pickle.extend(b"(\x8c\x07storagectorch\nFloatStorage\n\x8c\x010\x8c\x03cpu");
            pickle.extend([b'M', n[0], n[1], b't', b'Q', b'K', 0]);
            pickle.extend([b'M', n[0], n[1], 0x85, b'K', 1, 0x85, b't', b'R', b's']);
        }
        pickle.push(b'.');
        let mut zipped = std::io::Cursor::new(Vec::new());
        let mut writer = zip::ZipWriter::new(&mut zipped);
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        writer.start_file("w/data.pkl", stored).unwrap();
        std::io::Write::write_all(&mut writer, &pickle).unwrap();
        writer.start_file("w/data/0", stored).unwrap();
        std::io::Write::write_all(&mut writer, &vec![0u8; 4 * storage_len as usize]).unwrap();
        writer.finish().unwrap();
        zipped.into_inner()
    }

    #[test]
    fn many_views_of_one_storage_are_bounded_too() {
        assert_eq!(
            read_state_dict(&views_of_one_storage(2, 4096))
                .unwrap()
                .len(),
            2
        );
        let err = read_state_dict(&views_of_one_storage(100, 4096))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tensors of more than") && err.contains("limit"),
            "{err}"
        );
    }

    #[test]
    fn garbage_is_not_a_state_dict() {
        assert!(read_state_dict(b"not a zip").is_err());
    }
}
