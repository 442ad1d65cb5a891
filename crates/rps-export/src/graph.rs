//! A small builder for ONNX graphs over the types generated from `onnx.proto`.
//! Values are named by strings; each op helper adds one node and returns the name
//! of its output.

use prost::Message;

use crate::onnx::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_proto::DataType, tensor_shape_proto, type_proto,
};

/// The default-domain opset every graph uses (18: all reductions take axes as input).
pub const OPSET: i64 = 18;
/// ONNX IR version 8 is what opset 18 came with; ONNX Runtime reads it everywhere.
const IR_VERSION: i64 = 8;
/// The symbolic batch dimension.
pub const BATCH: &str = "N";

/// One dimension of a graph input or output.
#[derive(Debug, Clone, Copy)]
pub enum Dim {
    Fixed(usize),
    Batch,
}

/// Element types used at graph boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    F32,
    I64,
}

impl Elem {
    fn data_type(self) -> DataType {
        match self {
            Elem::F32 => DataType::Float,
            Elem::I64 => DataType::Int64,
        }
    }
}

/// An attribute value.
pub enum Attr {
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
    next_id: usize,
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, elem: Elem, dims: &[Dim]) -> String {
        self.inputs.push(value_info(name, elem, dims));
        name.to_string()
    }

    /// Declares `value` as the graph output `name`.
    pub fn output(&mut self, value: &str, name: &str, elem: Elem, dims: &[Dim]) {
        if value != name {
            self.output_names.push((value.into(), name.into()));
        }
        self.outputs.push(value_info(name, elem, dims));
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
                self.node("Identity", &[&value], &[&name], vec![]);
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

    /// A named float initializer (a weight of an inference graph).
    pub fn weight(&mut self, name: &str, shape: &[usize], data: &[f32]) -> String {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "{name}");
        self.initializers.push(float_tensor(name, shape, data));
        name.to_string()
    }

    pub fn const_f32(&mut self, shape: &[usize], data: &[f32]) -> String {
        let name = self.fresh("const");
        self.weight(&name, shape, data)
    }

    pub fn scalar(&mut self, value: f32) -> String {
        self.const_f32(&[], &[value])
    }

    pub fn const_i64(&mut self, shape: &[usize], data: &[i64]) -> String {
        assert_eq!(shape.iter().product::<usize>(), data.len());
        let name = self.fresh("const");
        self.initializers.push(TensorProto {
            name: Some(name.clone()),
            dims: shape.iter().map(|&d| d as i64).collect(),
            data_type: Some(DataType::Int64 as i32),
            raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ..Default::default()
        });
        name
    }

    /// A 1-D int64 constant (shapes, axes, indices).
    pub fn ints(&mut self, data: &[i64]) -> String {
        self.const_i64(&[data.len()], data)
    }

    /// Adds a node with one output.
    pub fn op(&mut self, op_type: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        let out = self.fresh(op_type);
        self.node(op_type, inputs, &[&out], attrs);
        out
    }

    /// Adds a node with `outputs` outputs.
    pub fn op_n(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        outputs: usize,
        attrs: Vec<(&str, Attr)>,
    ) -> Vec<String> {
        let names: Vec<String> = (0..outputs).map(|_| self.fresh(op_type)).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        self.node(op_type, inputs, &refs, attrs);
        names
    }

    fn node(&mut self, op_type: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<(&str, Attr)>) {
        self.nodes.push(NodeProto {
            op_type: Some(op_type.into()),
            name: Some(format!("{op_type}_{}", self.nodes.len())),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs.into_iter().map(|(n, a)| attribute(n, a)).collect(),
            ..Default::default()
        });
    }

    fn fresh(&mut self, stem: &str) -> String {
        self.next_id += 1;
        format!("{stem}_{}", self.next_id)
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
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(OPSET),
            }],
            producer_name: Some("rps-export".into()),
            producer_version: Some(env!("CARGO_PKG_VERSION").into()),
            metadata_props: self
                .metadata
                .into_iter()
                .map(|(key, value)| crate::onnx::StringStringEntryProto {
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

    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.op("Add", &[a, b], vec![])
    }

    pub fn sub(&mut self, a: &str, b: &str) -> String {
        self.op("Sub", &[a, b], vec![])
    }

    pub fn mul(&mut self, a: &str, b: &str) -> String {
        self.op("Mul", &[a, b], vec![])
    }

    pub fn div(&mut self, a: &str, b: &str) -> String {
        self.op("Div", &[a, b], vec![])
    }

    pub fn matmul(&mut self, a: &str, b: &str) -> String {
        self.op("MatMul", &[a, b], vec![])
    }

    /// `a @ b^T` (or `a^T @ b`): a Gemm that reads the operand transposed in place.
    pub fn gemm(&mut self, a: &str, b: &str, trans_a: bool, trans_b: bool) -> String {
        self.op(
            "Gemm",
            &[a, b],
            vec![
                ("transA", Attr::Int(trans_a as i64)),
                ("transB", Attr::Int(trans_b as i64)),
            ],
        )
    }

    pub fn relu(&mut self, x: &str) -> String {
        self.op("Relu", &[x], vec![])
    }

    pub fn reshape(&mut self, x: &str, shape: &[i64]) -> String {
        let shape = self.ints(shape);
        self.op("Reshape", &[x, &shape], vec![])
    }

    pub fn transpose(&mut self, x: &str, perm: &[i64]) -> String {
        self.op("Transpose", &[x], vec![("perm", Attr::Ints(perm.to_vec()))])
    }

    pub fn reduce(&mut self, op: &str, x: &str, axes: &[i64], keep_dims: bool) -> String {
        let axes = self.ints(axes);
        self.op(
            op,
            &[x, &axes],
            vec![("keepdims", Attr::Int(keep_dims as i64))],
        )
    }

    pub fn gather(&mut self, x: &str, indices: &str, axis: i64) -> String {
        self.op("Gather", &[x, indices], vec![("axis", Attr::Int(axis))])
    }
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

fn float_tensor(name: &str, shape: &[usize], data: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: shape.iter().map(|&d| d as i64).collect(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
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
        let x = g.input("x", Elem::F32, &[Dim::Fixed(2)]);
        let y = g.relu(&x);
        let z = g.relu(&y);
        g.output(&y, "first", Elem::F32, &[Dim::Fixed(2)]);
        g.output(&y, "second", Elem::F32, &[Dim::Fixed(2)]);
        g.output(&x, "echo", Elem::F32, &[Dim::Fixed(2)]);
        g.output(&z, "last", Elem::F32, &[Dim::Fixed(2)]);
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
}
