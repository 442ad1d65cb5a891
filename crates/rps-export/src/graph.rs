//! A small builder for ONNX graphs over the types of `rps-onnx`. A tensor being built
//! is a [`Value`] handle; each op helper adds one node, takes its attributes as typed
//! arguments and returns the handle of its output.

use prost::Message;
use rps_model::window::Window;
use rps_onnx::float_tensor;
use rps_onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_proto::DataType, tensor_shape_proto, type_proto,
};

/// The default-domain opset every graph uses (18: all reductions take axes as input).
pub const OPSET: i64 = 18;
/// ONNX IR version 8 is what opset 18 came with; ONNX Runtime reads it everywhere.
const IR_VERSION: i64 = 8;
/// ONNX Runtime's domain of blocked-layout CPU kernels (`NchwcConv`, `ReorderInput`):
/// its own graph optimizer rewrites a `Conv` with constant weights into them; a train
/// step, whose weights are inputs, calls them itself.
pub const NCHWC_DOMAIN: &str = "com.microsoft.nchwc";
/// The symbolic batch dimension.
pub const BATCH: &str = "N";

/// A tensor of the graph being built: an input, an initializer or a node's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value(String);

impl Value {
    pub fn name(&self) -> &str {
        &self.0
    }
}

/// One dimension of a graph input or output.
#[derive(Debug, Clone, Copy)]
pub enum Dim {
    Fixed(usize),
    Batch,
}

impl Dim {
    /// Fixed dimensions of `shape`.
    pub fn fixed(shape: &[usize]) -> Vec<Dim> {
        shape.iter().map(|&d| Dim::Fixed(d)).collect()
    }

    /// A batch of `shape`: the batch dimension first.
    pub fn batch_of(shape: &[usize]) -> Vec<Dim> {
        [vec![Dim::Batch], Dim::fixed(shape)].concat()
    }
}

/// Element types used at graph boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    F32,
    I64,
    U8,
    F64,
}

impl Elem {
    fn data_type(self) -> DataType {
        match self {
            Elem::F32 => DataType::Float,
            Elem::I64 => DataType::Int64,
            Elem::U8 => DataType::Uint8,
            Elem::F64 => DataType::Double,
        }
    }
}

/// How `Gemm` reads its operands.
#[derive(Debug, Clone, Copy, Default)]
pub struct Transposed {
    pub a: bool,
    pub b: bool,
}

impl Transposed {
    pub const NONE: Self = Self { a: false, b: false };
}

/// The reductions the graphs use.
#[derive(Debug, Clone, Copy)]
pub enum Reduce {
    Mean,
    Sum,
    SumSquare,
    Max,
}

impl Reduce {
    fn op_type(self) -> &'static str {
        match self {
            Reduce::Mean => "ReduceMean",
            Reduce::Sum => "ReduceSum",
            Reduce::SumSquare => "ReduceSumSquare",
            Reduce::Max => "ReduceMax",
        }
    }
}

/// An attribute value.
enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
}

#[derive(Default)]
pub struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    /// `(value, output name)` where they differ, resolved when serialized.
    output_names: Vec<(String, String)>,
    metadata: Vec<(String, String)>,
    /// Operator domains besides the default one that nodes use (version 1 each).
    domains: Vec<&'static str>,
    next_id: usize,
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a graph input.
    /// The operator of every node so far, in order.
    #[cfg(test)]
    pub fn op_types(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.op_type()).collect()
    }

    pub fn input(&mut self, name: &str, elem: Elem, dims: &[Dim]) -> Value {
        self.inputs.push(value_info(name, elem, dims));
        Value(name.to_string())
    }

    /// Declares `value` as the graph output `name`.
    pub fn output(&mut self, value: &Value, name: &str, elem: Elem, dims: &[Dim]) {
        if value.0 != name {
            self.output_names.push((value.0.clone(), name.into()));
        }
        self.outputs.push(value_info(name, elem, dims));
    }

    /// A named float initializer (a weight of an inference graph).
    pub fn initializer(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Value {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "{name}");
        self.initializers.push(float_tensor(name, shape, data));
        Value(name.to_string())
    }

    /// A float constant.
    pub fn constant(&mut self, shape: &[usize], data: &[f32]) -> Value {
        let name = self.fresh("const");
        self.initializer(&name, shape, data)
    }

    /// A constant holding `m`.
    pub fn matrix(&mut self, m: &ndarray::Array2<f32>) -> Value {
        let m = m.as_standard_layout();
        self.constant(
            &[m.nrows(), m.ncols()],
            m.as_slice().expect("standard layout"),
        )
    }

    pub fn scalar(&mut self, value: f32) -> Value {
        self.constant(&[], &[value])
    }

    /// An int64 constant (indices).
    pub fn int_constant(&mut self, shape: &[usize], data: &[i64]) -> Value {
        assert_eq!(shape.iter().product::<usize>(), data.len());
        let name = self.fresh("const");
        self.initializers.push(TensorProto {
            name: Some(name.clone()),
            dims: shape.iter().map(|&d| d as i64).collect(),
            data_type: Some(DataType::Int64 as i32),
            raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ..Default::default()
        });
        Value(name)
    }

    /// A 1-D int64 constant (shapes, axes).
    pub fn ints(&mut self, data: &[i64]) -> Value {
        self.int_constant(&[data.len()], data)
    }

    /// A key/value the model carries (read back with ONNX Runtime's model metadata).
    pub fn metadata(&mut self, key: &str, value: &str) {
        self.metadata.push((key.into(), value.into()));
    }

    /// The serialized model.
    pub fn to_bytes(mut self, name: &str) -> Vec<u8> {
        self.name_outputs();
        ModelProto {
            ir_version: Some(IR_VERSION),
            opset_import: std::iter::once((String::new(), OPSET))
                .chain(self.domains.iter().map(|d| (d.to_string(), 1)))
                .map(|(domain, version)| OperatorSetIdProto {
                    domain: Some(domain),
                    version: Some(version),
                })
                .collect(),
            producer_name: Some("rps-export".into()),
            producer_version: Some(env!("CARGO_PKG_VERSION").into()),
            metadata_props: self
                .metadata
                .into_iter()
                .map(|(key, value)| StringStringEntryProto {
                    key: Some(key),
                    value: Some(value),
                })
                .collect(),
            graph: Some(GraphProto {
                name: Some(name.into()),
                node: self.nodes,
                initializer: self.initializers,
                input: self.inputs,
                output: self.outputs,
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    // Op helpers, named after the ONNX operators they add.

    pub fn add(&mut self, a: &Value, b: &Value) -> Value {
        self.op("Add", &[a, b], vec![])
    }

    pub fn sub(&mut self, a: &Value, b: &Value) -> Value {
        self.op("Sub", &[a, b], vec![])
    }

    pub fn mul(&mut self, a: &Value, b: &Value) -> Value {
        self.op("Mul", &[a, b], vec![])
    }

    pub fn div(&mut self, a: &Value, b: &Value) -> Value {
        self.op("Div", &[a, b], vec![])
    }

    pub fn pow(&mut self, base: &Value, exponent: &Value) -> Value {
        self.op("Pow", &[base, exponent], vec![])
    }

    pub fn sqrt(&mut self, x: &Value) -> Value {
        self.op("Sqrt", &[x], vec![])
    }

    pub fn reciprocal(&mut self, x: &Value) -> Value {
        self.op("Reciprocal", &[x], vec![])
    }

    pub fn exp(&mut self, x: &Value) -> Value {
        self.op("Exp", &[x], vec![])
    }

    pub fn ceil(&mut self, x: &Value) -> Value {
        self.op("Ceil", &[x], vec![])
    }

    /// 1.0 where `a == b`, else 0.0 (`Equal` then `Cast`).
    pub fn equal_f32(&mut self, a: &Value, b: &Value) -> Value {
        let equal = self.op("Equal", &[a, b], vec![]);
        self.cast(&equal, Elem::F32)
    }

    /// The index of the first largest value along `axis`, kept as an axis of 1.
    pub fn arg_max(&mut self, x: &Value, axis: i64) -> Value {
        self.op(
            "ArgMax",
            &[x],
            vec![("axis", Attr::Int(axis)), ("keepdims", Attr::Int(1))],
        )
    }

    /// `[A, rows, B]` -> `[A, rows + 1, B]`, the last row zero: what a gather by
    /// index reads where a window falls in the padding (or a position goes unreached).
    pub fn pad_zero_row(&mut self, x: &Value) -> Value {
        self.pad(x, &[0, 0, 0, 0, 1, 0])
    }

    /// `x`'s rows at `indices` along axis 1, where the index one past the last row
    /// reads zeros ([`Graph::pad_zero_row`]): convolution padding.
    pub fn gather_padded(&mut self, x: &Value, indices: &Value) -> Value {
        let padded = self.pad_zero_row(x);
        self.gather(&padded, indices, 1)
    }

    /// `x`'s elements at `indices` along `axis`, `indices`' shape.
    pub fn gather_elements(&mut self, x: &Value, indices: &Value, axis: i64) -> Value {
        self.op(
            "GatherElements",
            &[x, indices],
            vec![("axis", Attr::Int(axis))],
        )
    }

    /// `x` broadcast to `shape` (an int64 vector value).
    pub fn expand(&mut self, x: &Value, shape: &Value) -> Value {
        self.op("Expand", &[x, shape], vec![])
    }

    pub fn relu(&mut self, x: &Value) -> Value {
        self.op("Relu", &[x], vec![])
    }

    pub fn clip(&mut self, x: &Value, min: &Value, max: &Value) -> Value {
        self.op("Clip", &[x, min, max], vec![])
    }

    pub fn matmul(&mut self, a: &Value, b: &Value) -> Value {
        self.op("MatMul", &[a, b], vec![])
    }

    /// `a · b (+ c)`, reading `a` or `b` transposed in place.
    pub fn gemm(&mut self, a: &Value, b: &Value, c: Option<&Value>, t: Transposed) -> Value {
        let inputs: Vec<&Value> = [a, b].into_iter().chain(c).collect();
        self.op(
            "Gemm",
            &inputs,
            vec![
                ("transA", Attr::Int(t.a as i64)),
                ("transB", Attr::Int(t.b as i64)),
            ],
        )
    }

    pub fn reshape(&mut self, x: &Value, shape: &[i64]) -> Value {
        let shape = self.ints(shape);
        self.op("Reshape", &[x, &shape], vec![])
    }

    pub fn transpose(&mut self, x: &Value, perm: &[i64]) -> Value {
        self.op("Transpose", &[x], vec![("perm", Attr::Ints(perm.to_vec()))])
    }

    pub fn unsqueeze(&mut self, x: &Value, axes: &[i64]) -> Value {
        let axes = self.ints(axes);
        self.op("Unsqueeze", &[x, &axes], vec![])
    }

    pub fn flatten(&mut self, x: &Value, axis: i64) -> Value {
        self.op("Flatten", &[x], vec![("axis", Attr::Int(axis))])
    }

    /// Zero padding: `pads` holds the start of every axis, then the end of every axis.
    pub fn pad(&mut self, x: &Value, pads: &[i64]) -> Value {
        let pads = self.ints(pads);
        self.op("Pad", &[x, &pads], vec![])
    }

    /// `x[starts..ends]` along `axes`.
    pub fn slice(&mut self, x: &Value, starts: &[i64], ends: &[i64], axes: &[i64]) -> Value {
        let [starts, ends, axes] = [starts, ends, axes].map(|v| self.ints(v));
        self.op("Slice", &[x, &starts, &ends, &axes], vec![])
    }

    pub fn reduce(&mut self, reduce: Reduce, x: &Value, axes: &[i64], keep_dims: bool) -> Value {
        let axes = self.ints(axes);
        self.op(
            reduce.op_type(),
            &[x, &axes],
            vec![("keepdims", Attr::Int(keep_dims as i64))],
        )
    }

    pub fn concat(&mut self, parts: &[Value], axis: i64) -> Value {
        let parts: Vec<&Value> = parts.iter().collect();
        self.op("Concat", &parts, vec![("axis", Attr::Int(axis))])
    }

    pub fn gather(&mut self, x: &Value, indices: &Value, axis: i64) -> Value {
        self.op("Gather", &[x, indices], vec![("axis", Attr::Int(axis))])
    }

    /// The shape of `x`, an int64 vector.
    pub fn shape(&mut self, x: &Value) -> Value {
        self.op("Shape", &[x], vec![])
    }

    /// The element count of `x`, an int64 scalar.
    pub fn size(&mut self, x: &Value) -> Value {
        self.op("Size", &[x], vec![])
    }

    pub fn cast(&mut self, x: &Value, to: Elem) -> Value {
        self.op("Cast", &[x], vec![("to", Attr::Int(to.data_type() as i64))])
    }

    /// An NCHW convolution without bias of a `size` x `size` map, in `groups` groups
    /// (one per channel for a depthwise convolution).
    pub fn conv(
        &mut self,
        x: &Value,
        weight: &Value,
        w: Window,
        size: usize,
        groups: usize,
    ) -> Value {
        let mut attrs = window_attrs(w, size);
        if groups > 1 {
            attrs.push(("group", Attr::Int(groups as i64)));
        }
        self.op("Conv", &[x, weight], attrs)
    }

    /// `[N, C, H, W]` -> the same in ONNX Runtime's blocked layout, `[N, C/B, H, W, B]`
    /// held as `[N, C, H, W]` (`C` a multiple of the machine's block `B`, 8 or 16).
    pub fn reorder_input(&mut self, x: &Value) -> Value {
        self.op_in(NCHWC_DOMAIN, "ReorderInput", &[x], vec![])
    }

    /// A blocked map (see [`Graph::reorder_input`]) -> `[N, channels, H, W]`.
    pub fn reorder_output(&mut self, x: &Value, channels: usize) -> Value {
        let attrs = vec![("channels", Attr::Int(channels as i64))];
        self.op_in(NCHWC_DOMAIN, "ReorderOutput", &[x], attrs)
    }

    /// A convolution of a blocked `[N, C, H, W]` map (see [`Graph::reorder_input`]) by
    /// blocked filters in `groups` groups (1: dense; the channels: depthwise), with
    /// `pads` (top, left, bottom, right): ONNX Runtime's own blocked kernels.
    pub fn nchwc_conv(
        &mut self,
        x: &Value,
        filters: &Value,
        (kernel, stride): (usize, usize),
        pads: [usize; 4],
        groups: usize,
    ) -> Value {
        let (kernel, stride) = (kernel as i64, stride as i64);
        let attrs = vec![
            ("kernel_shape", Attr::Ints(vec![kernel, kernel])),
            ("strides", Attr::Ints(vec![stride, stride])),
            ("pads", Attr::Ints(pads.iter().map(|&p| p as i64).collect())),
            ("group", Attr::Int(groups as i64)),
        ];
        self.op_in(NCHWC_DOMAIN, "Conv", &[x, filters], attrs)
    }

    /// Eval-mode BatchNorm with running statistics.
    pub fn batch_norm(
        &mut self,
        x: &Value,
        [scale, bias, mean, var]: [&Value; 4],
        eps: f32,
    ) -> Value {
        self.op(
            "BatchNormalization",
            &[x, scale, bias, mean, var],
            vec![("epsilon", Attr::Float(eps))],
        )
    }

    /// Max pooling of a `size` x `size` map.
    pub fn max_pool(&mut self, x: &Value, w: Window, size: usize) -> Value {
        self.op("MaxPool", &[x], window_attrs(w, size))
    }

    pub fn global_average_pool(&mut self, x: &Value) -> Value {
        self.op("GlobalAveragePool", &[x], vec![])
    }

    pub fn softmax(&mut self, x: &Value, axis: i64) -> Value {
        self.op("Softmax", &[x], vec![("axis", Attr::Int(axis))])
    }

    /// The mean cross-entropy of `logits` against int64 `labels`.
    pub fn cross_entropy(&mut self, logits: &Value, labels: &Value) -> Value {
        self.op("SoftmaxCrossEntropyLoss", &[logits, labels], vec![])
    }

    /// The weighted mean cross-entropy, `sum(w[y] * loss) / sum(w[y])`, and the
    /// log-probabilities it came from.
    pub fn weighted_cross_entropy(
        &mut self,
        logits: &Value,
        labels: &Value,
        weights: &Value,
    ) -> (Value, Value) {
        let [loss, log_prob] = self
            .op_n(
                "SoftmaxCrossEntropyLoss",
                &[logits, labels, weights],
                2,
                vec![],
            )
            .try_into()
            .expect("two outputs");
        (loss, log_prob)
    }

    /// `indices` one-hot along the last axis, `depth` wide, as `[off, on]` `values`.
    pub fn one_hot(&mut self, indices: &Value, depth: &Value, values: &Value) -> Value {
        self.op(
            "OneHot",
            &[indices, depth, values],
            vec![("axis", Attr::Int(-1))],
        )
    }

    /// Adds a node with one output.
    fn op(&mut self, op_type: &str, inputs: &[&Value], attrs: Vec<(&str, Attr)>) -> Value {
        self.op_n(op_type, inputs, 1, attrs).remove(0)
    }

    /// Adds a node of `domain` with one output.
    fn op_in(
        &mut self,
        domain: &'static str,
        op_type: &str,
        inputs: &[&Value],
        attrs: Vec<(&str, Attr)>,
    ) -> Value {
        let y = self.op(op_type, inputs, attrs);
        if !self.domains.contains(&domain) {
            self.domains.push(domain);
        }
        let node = self.nodes.last_mut().expect("just added");
        node.domain = Some(domain.into());
        y
    }

    /// Adds a node with `outputs` outputs.
    fn op_n(
        &mut self,
        op_type: &str,
        inputs: &[&Value],
        outputs: usize,
        attrs: Vec<(&str, Attr)>,
    ) -> Vec<Value> {
        let names: Vec<String> = (0..outputs).map(|_| self.fresh(op_type)).collect();
        let inputs: Vec<&str> = inputs.iter().map(|v| v.name()).collect();
        self.node(op_type, &inputs, &names, attrs);
        names.into_iter().map(Value).collect()
    }

    fn node(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        outputs: &[String],
        attrs: Vec<(&str, Attr)>,
    ) {
        self.nodes.push(NodeProto {
            op_type: Some(op_type.into()),
            name: Some(format!("{op_type}_{}", self.nodes.len())),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.to_vec(),
            attribute: attrs.into_iter().map(|(n, a)| attribute(n, a)).collect(),
            ..Default::default()
        });
    }

    fn fresh(&mut self, stem: &str) -> String {
        self.next_id += 1;
        format!("{stem}_{}", self.next_id)
    }

    /// Gives each output its name: the producing node's value is renamed where it
    /// can be (ONNX Runtime copies through an `Identity`, which for a train step's
    /// parameters is tens of megabytes a step); graph inputs, initializers and
    /// values output twice go through an `Identity`.
    fn name_outputs(&mut self) {
        let mut pending = std::mem::take(&mut self.output_names);
        for i in 0..pending.len() {
            let (value, name) = pending[i].clone();
            let is_output = self
                .outputs
                .iter()
                .any(|o| o.name.as_deref() == Some(value.as_str()));
            let produced = self.nodes.iter().any(|n| n.output.contains(&value));
            if !produced || is_output {
                self.node("Identity", &[&value], &[name], vec![]);
                continue;
            }
            for node in &mut self.nodes {
                for v in node.input.iter_mut().chain(node.output.iter_mut()) {
                    if *v == value {
                        v.clone_from(&name);
                    }
                }
            }
            for (later, _) in &mut pending[i + 1..] {
                if *later == value {
                    later.clone_from(&name);
                }
            }
        }
    }
}

/// The window's attributes on a `size` x `size` map: its padding written out, so
/// a reader sees TensorFlow's 'SAME' as the zeros it adds.
fn window_attrs(w: Window, size: usize) -> Vec<(&'static str, Attr)> {
    let (k, s) = (w.kernel as i64, w.stride as i64);
    let (before, after) = w.pads(size);
    let (before, after) = (before as i64, after as i64);
    vec![
        ("kernel_shape", Attr::Ints(vec![k, k])),
        ("strides", Attr::Ints(vec![s, s])),
        ("pads", Attr::Ints(vec![before, before, after, after])),
    ]
}

fn value_info(name: &str, elem: Elem, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(n) => tensor_shape_proto::dimension::Value::DimValue(*n as i64),
                Dim::Batch => tensor_shape_proto::dimension::Value::DimParam(BATCH.into()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem.data_type() as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn attribute(name: &str, value: Attr) -> AttributeProto {
    let mut attr = AttributeProto {
        name: Some(name.into()),
        ..Default::default()
    };
    let kind = match value {
        Attr::Int(i) => {
            attr.i = Some(i);
            AttributeType::Int
        }
        Attr::Ints(v) => {
            attr.ints = v;
            AttributeType::Ints
        }
        Attr::Float(f) => {
            attr.f = Some(f);
            AttributeType::Float
        }
    };
    attr.r#type = Some(kind as i32);
    attr
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(g: Graph) -> GraphProto {
        ModelProto::decode(g.to_bytes("test").as_slice())
            .unwrap()
            .graph
            .unwrap()
    }

    #[test]
    fn outputs_rename_their_producer_instead_of_copying() {
        let mut g = Graph::new();
        let dims = [Dim::Fixed(2)];
        let x = g.input("x", Elem::F32, &dims);
        let y = g.relu(&x);
        let z = g.relu(&y);
        g.output(&y, "first", Elem::F32, &dims);
        g.output(&y, "second", Elem::F32, &dims);
        g.output(&x, "echo", Elem::F32, &dims);
        g.output(&z, "last", Elem::F32, &dims);
        let graph = decoded(g);
        let io: Vec<(&str, Vec<&str>, Vec<&str>)> = graph
            .node
            .iter()
            .map(|n| {
                (
                    n.op_type(),
                    n.input.iter().map(String::as_str).collect(),
                    n.output.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            io,
            [
                ("Relu", vec!["x"], vec!["first"]),
                ("Relu", vec!["first"], vec!["last"]),
                // A value output twice, and a graph input, are copied.
                ("Identity", vec!["first"], vec!["second"]),
                ("Identity", vec!["x"], vec!["echo"]),
            ]
        );
    }

    #[test]
    fn typed_attributes_land_on_the_node() {
        let mut g = Graph::new();
        let x = g.input("x", Elem::F32, &[Dim::Batch, Dim::Fixed(3)]);
        let w = g.input("w", Elem::F32, &[Dim::Fixed(4), Dim::Fixed(3)]);
        let y = g.gemm(&x, &w, None, Transposed { a: false, b: true });
        g.output(&y, "y", Elem::F32, &[Dim::Batch, Dim::Fixed(4)]);
        let node = &decoded(g).node[0];
        let attr = |name: &str| node.attribute.iter().find(|a| a.name() == name).unwrap().i;
        assert_eq!((attr("transA"), attr("transB")), (Some(0), Some(1)));
    }
}
