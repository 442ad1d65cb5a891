//! The pickle machine both `torch.save` formats need: exactly what a `state_dict()`
//! pickles to (an `OrderedDict` of `torch._utils._rebuild_tensor_v2` calls on typed
//! storages, and the legacy format's small dicts, lists and integers). Anything
//! else is refused with the opcode or global that was not expected.
//!
//! The pickle is untrusted: what it can make the machine do is bounded (nesting
//! depth, values made per byte read), and a tensor's view of its storage is checked
//! with checked arithmetic before a value is read; each refusal names the limit.

use std::collections::HashMap;

use crate::PthError;

/// A float tensor, contiguous, in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Containers nest at most this deep (a state dict needs 4).
pub const MAX_DEPTH: usize = 64;
/// Values the pickle may make, per byte of it read so far (a state dict makes about
/// 0.2), and at least [`MIN_VALUES`].
pub const VALUES_PER_BYTE: usize = 16;
pub const MIN_VALUES: usize = 1 << 12;

/// A storage's element type, from its class (`torch.FloatStorage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dtype {
    F32,
    /// Another type this many bytes wide: stored and skipped, never read.
    Other(usize),
    /// A class the reader does not know: its width is unknown.
    Unknown,
}

impl Dtype {
    fn of_class(class: &str) -> Dtype {
        match class {
            "torch.FloatStorage" => Dtype::F32,
            "torch.DoubleStorage" | "torch.LongStorage" => Dtype::Other(8),
            "torch.IntStorage" => Dtype::Other(4),
            "torch.HalfStorage" | "torch.BFloat16Storage" | "torch.ShortStorage" => Dtype::Other(2),
            "torch.CharStorage" | "torch.ByteStorage" | "torch.BoolStorage" => Dtype::Other(1),
            _ => Dtype::Unknown,
        }
    }

    /// Bytes per element, when known.
    pub(crate) fn width(self) -> Option<usize> {
        match self {
            Dtype::F32 => Some(4),
            Dtype::Other(width) => Some(width),
            Dtype::Unknown => None,
        }
    }
}

/// What `_rebuild_tensor_v2(storage, offset, size, stride, ...)` describes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TensorSpec {
    pub storage_key: String,
    pub dtype: Dtype,
    pub storage_len: usize,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
}

impl TensorSpec {
    pub(crate) fn materialize(&self, storage: &[u8]) -> Result<Tensor, String> {
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
pub(crate) enum Value {
    Mark,
    None,
    Bool(bool),
    Int(i64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
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
            Value::Tuple(items) | Value::List(items) => {
                1 + items.iter().map(Value::depth).max().unwrap_or(0)
            }
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
            Value::Tuple(items) | Value::List(items) => {
                1 + items.iter().map(Value::count).sum::<usize>()
            }
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
    pub(crate) fn describe(&self) -> String {
        let text = format!("{self:?}");
        match text.char_indices().nth(120) {
            Some((end, _)) => format!("{}...", &text[..end]),
            None => text,
        }
    }
}

pub(crate) fn err<T>(message: impl Into<String>) -> Result<T, PthError> {
    Err(PthError::Pickle(message.into()))
}

/// Runs the pickle that starts at `input`'s position to its STOP, leaving `input`
/// just after it (the legacy format puts several pickles one after another).
pub(crate) fn load(input: &mut Reader) -> Result<Value, PthError> {
    Machine {
        stack: Vec::new(),
        memo: HashMap::new(),
        made: 0,
        start: input.at,
    }
    .run(input)
}

struct Machine {
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
    /// Values made so far (memo copies included), against the bytes read.
    made: usize,
    /// Where the pickle starts in its input.
    start: usize,
}

impl Machine {
    fn run(mut self, input: &mut Reader) -> Result<Value, PthError> {
        loop {
            let read = input.at - self.start;
            let budget = read.saturating_mul(VALUES_PER_BYTE).max(MIN_VALUES);
            if self.made > budget {
                return Err(PthError::Limit {
                    what: format!("{read} bytes of pickle making {} values", self.made),
                    limit: budget as u64,
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
                b']' => self.push(Value::List(Vec::new())),
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
                b'a' => {
                    let item = self.pop()?;
                    check_depth(&[&item])?;
                    self.list_top()?.push(item);
                }
                b'e' => {
                    let items = self.pop_to_mark()?;
                    check_depth(&items.iter().collect::<Vec<_>>())?;
                    self.list_top()?.extend(items);
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

    fn list_top(&mut self) -> Result<&mut Vec<Value>, PthError> {
        match self.stack.last_mut() {
            Some(Value::List(items)) => Ok(items),
            _ => err("APPEND on something that is not a list"),
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

/// `('storage', torch.FloatStorage, key, location, numel)`, and in the legacy
/// format a sixth item, the view metadata: `None` unless the storage is a view of
/// another (which no `torch.save` since PyTorch 0.4 writes).
fn storage_from_persistent_id(id: Value) -> Result<Value, PthError> {
    let unexpected = |id: &Value| err(format!("unexpected persistent id {}", id.describe()));
    let Value::Tuple(items) = &id else {
        return unexpected(&id);
    };
    let ([
        Value::Str(kind),
        Value::Global(class),
        Value::Str(key),
        _,
        Value::Int(len),
    ]
    | [
        Value::Str(kind),
        Value::Global(class),
        Value::Str(key),
        _,
        Value::Int(len),
        Value::None,
    ]) = items.as_slice()
    else {
        return unexpected(&id);
    };
    if kind != "storage" {
        return unexpected(&id);
    }
    Ok(Value::Storage {
        key: key.clone(),
        dtype: Dtype::of_class(class),
        len: usize::try_from(*len)
            .map_or_else(|_| err(format!("storage of {len} elements")), Ok)?,
    })
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

/// The tensors of a state dict pickle's top dict, in its order: each key a string,
/// each value a tensor.
pub(crate) fn state_dict(top: Value) -> Result<Vec<(String, TensorSpec)>, PthError> {
    let Value::Dict(items) = top else {
        return err("the top object is not a dict");
    };
    items
        .into_iter()
        .map(|(key, value)| match (key, value) {
            (Value::Str(key), Value::Tensor(spec)) => Ok((key, spec)),
            (Value::Str(key), _) => Err(PthError::Tensor {
                key,
                message: "not a tensor".into(),
            }),
            _ => err("a state dict key is not a string"),
        })
        .collect()
}

/// Bytes read front to back; every read is checked against the end.
pub(crate) struct Reader<'a> {
    pub bytes: &'a [u8],
    pub at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], PthError> {
        let slice = self
            .at
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.at..end))
            .map_or_else(|| err("the file ends early"), Ok)?;
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

    pub(crate) fn u64(&mut self) -> Result<u64, PthError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn text(&mut self, n: usize) -> Result<String, PthError> {
        String::from_utf8(self.take(n)?.to_vec()).map_or_else(|_| err("string is not UTF-8"), Ok)
    }

    fn line(&mut self) -> Result<String, PthError> {
        let end = self.bytes[self.at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or_else(|| err("the file ends early"), Ok)?;
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
        let spec = spec(vec![3, 2], vec![1, 3], 6); // a transposed [2,3]
        let storage: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let t = spec.materialize(&storage).unwrap();
        assert_eq!(t.data, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        let err = spec.materialize(&storage[..20]).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
    }

    /// Why the pickle machine refuses `pickle`.
    fn refusal(pickle: &[u8]) -> String {
        load(&mut Reader::new(pickle)).unwrap_err().to_string()
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
        // And through APPEND: a list in a list in a list ...
        let mut pickle = b"\x80\x02]".to_vec();
        pickle.extend(std::iter::repeat_n(b']', 10_000));
        pickle.extend(std::iter::repeat_n(b'a', 10_000));
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
    fn the_budget_grows_with_the_bytes_read_not_the_bytes_after() {
        // The doubling above, followed by a megabyte the machine never reads: the
        // budget counts what the pickle has read, so the tail buys it nothing.
        let mut pickle = b"\x80\x02)q\x00".to_vec();
        for _ in 0..40 {
            pickle.extend(b"h\x00h\x00\x86q\x00");
        }
        pickle.push(b'.');
        pickle.extend(vec![0u8; 1 << 20]);
        assert!(refusal(&pickle).contains("limit"));
    }

    #[test]
    fn lists_take_appends_and_only_lists_do() {
        let mut input = Reader::new(b"\x80\x02](K\x01K\x02eK\x03a.tail");
        let list = load(&mut input).unwrap();
        assert_eq!(
            list,
            Value::List(vec![Value::Int(1), Value::Int(2), Value::Int(3)])
        );
        assert_eq!(&input.bytes[input.at..], b"tail");
        assert!(refusal(b"\x80\x02)K\x01a.").contains("not a list"));
    }

    #[test]
    fn a_storage_view_is_refused() {
        // ('storage', torch.FloatStorage, '0', 'cpu', 4, ('1', 0, 2)) BINPERSID
        let pickle = b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04(X\x01\x00\x00\x001K\x00K\x02ttQ.";
        assert!(refusal(pickle).contains("unexpected persistent id"));
    }
}
