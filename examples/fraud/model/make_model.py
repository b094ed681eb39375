#!/usr/bin/env python3
"""Builds the fraud-v1 logistic-regression model as ONNX (fraud_lr.onnx).

Run from the repository root:

    pip install onnx==1.23.2 && python3 examples/fraud/model/make_model.py

That rewrites examples/fraud/model/fraud_lr.onnx. The output is
deterministic: the same onnx version writes the same bytes on every run.

    python3 examples/fraud/model/make_model.py --test-data crates/weir-model/tests/data

additionally writes the small models the weir-model crate's tests load (a
float32 model with two outputs, one whose batch is fixed at 1 in the file,
and models that `OnnxModel::load` must reject).

The model reproduces the scorer of the fraud-v1 reference workload
(/work/shared/workloads/fraud_v1_reference.py) bit for bit:

    z = b; for xi, wi in zip(x, w): z += xi * wi
    score = 1.0 / (1.0 + exp(-z))

so every tensor is float64 (DOUBLE), the five products are added one at a
time starting from the bias, in feature order (Gather each column, Mul, then
a chain of Adds, rather than MatMul/Gemm/ReduceSum, whose summation order is
up to the runtime), and the sigmoid is spelled out as Neg, Exp, Add, Div
instead of the Sigmoid op (which runtimes may approximate, and tract does not
offer for float64 at all).

Input:  "features", DOUBLE [N, 5], N a dynamic batch dimension; features in
        order f_amount, f_count, f_sum, f_max, f_ratio (see model.toml).
Output: "score", DOUBLE [N].
"""
import argparse
import os

import onnx
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))

WEIGHTS = [0.8, 0.3, 0.5, 0.2, 1.5]
BIAS = -40.0

# Opset 13 / IR version 7: old enough for every runtime we care about (and
# new enough for ReduceSum's `axes` input in the test model). Pinned so the
# bytes do not change with the onnx package's defaults.
OPSET = 13
IR_VERSION = 7
PRODUCER = "weir examples/fraud/model/make_model.py"


def _model(graph, doc):
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        producer_version="1",
        ir_version=IR_VERSION,
        doc_string=doc,
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def _save(model, path):
    data = model.SerializeToString(deterministic=True)
    with open(path, "wb") as f:
        f.write(data)
    print(f"wrote {path} ({len(data)} bytes)")


def fraud_lr():
    n = len(WEIGHTS)
    inits = [helper.make_tensor(f"w{i}", TensorProto.DOUBLE, [], [w]) for i, w in enumerate(WEIGHTS)]
    inits += [helper.make_tensor(f"col{i}", TensorProto.INT64, [], [i]) for i in range(n)]
    inits += [
        helper.make_tensor("b", TensorProto.DOUBLE, [], [BIAS]),
        helper.make_tensor("one", TensorProto.DOUBLE, [], [1.0]),
    ]
    nodes = []
    # z = ((((b + x0*w0) + x1*w1) + x2*w2) + x3*w3) + x4*w4, where x_i is
    # column i of the input (a Gather with a scalar index: shape [N]).
    # Working on [N] columns rather than [N, 1] slices is also what keeps
    # tract on its fast paths (about 5x faster per batch).
    acc = "b"
    for i in range(n):
        nodes += [
            helper.make_node("Gather", ["features", f"col{i}"], [f"x{i}"], name=f"column{i}", axis=1),
            helper.make_node("Mul", [f"x{i}", f"w{i}"], [f"term{i}"], name=f"mul_w{i}"),
            helper.make_node("Add", [acc, f"term{i}"], [f"z{i}"], name=f"add_term{i}"),
        ]
        acc = f"z{i}"
    # score = 1 / (1 + exp(-z))
    nodes += [
        helper.make_node("Neg", [acc], ["neg_z"], name="neg"),
        helper.make_node("Exp", ["neg_z"], ["exp_neg_z"], name="exp"),
        helper.make_node("Add", ["one", "exp_neg_z"], ["denominator"], name="one_plus"),
        helper.make_node("Div", ["one", "denominator"], ["score"], name="reciprocal"),
    ]
    graph = helper.make_graph(
        nodes,
        "fraud_lr",
        [helper.make_tensor_value_info("features", TensorProto.DOUBLE, ["N", n])],
        [helper.make_tensor_value_info("score", TensorProto.DOUBLE, ["N"])],
        initializer=inits,
    )
    return _model(
        graph,
        "fraud-v1 logistic regression: score = 1/(1+exp(-(b + sum_i x_i*w_i))), "
        f"w = {WEIGHTS}, b = {BIAS}, summed from b in feature order, float64 throughout.",
    )


def tiny_f32():
    """float32 model, input x [N, 3], outputs y = x @ W + c [N, 2] and s = sum(x) [N]."""
    inits = [
        helper.make_tensor("W", TensorProto.FLOAT, [3, 2], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        helper.make_tensor("c", TensorProto.FLOAT, [2], [0.5, -0.5]),
        helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "c"], ["y"]),
        helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_f32",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N"]),
        ],
        initializer=inits,
    )
    return _model(graph, "weir-model test model: float32, two outputs")


def identity(name, elem_type, in_shape, doc):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        name,
        [helper.make_tensor_value_info("x", elem_type, in_shape)],
        [helper.make_tensor_value_info("y", elem_type, in_shape)],
    )
    return _model(graph, doc)


def two_inputs():
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])],
        "two_inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.DOUBLE, ["N", 2]),
            helper.make_tensor_value_info("b", TensorProto.DOUBLE, ["N", 2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["N", 2])],
    )
    return _model(graph, "weir-model test model: two inputs (rejected)")


def scalar_output():
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0)],
        "scalar_output",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["N", 3])],
        [helper.make_tensor_value_info("total", TensorProto.DOUBLE, [])],
    )
    return _model(graph, "weir-model test model: scalar output (rejected)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out",
        default=os.path.join(HERE, "fraud_lr.onnx"),
        help="where to write the fraud model (default: fraud_lr.onnx beside this script)",
    )
    parser.add_argument(
        "--test-data",
        metavar="DIR",
        help="also write the weir-model test models into DIR",
    )
    args = parser.parse_args()

    _save(fraud_lr(), args.out)
    if args.test_data:
        os.makedirs(args.test_data, exist_ok=True)
        test_models = {
            "tiny_f32.onnx": tiny_f32(),
            "rank3_input.onnx": identity(
                "rank3_input", TensorProto.DOUBLE, [3, 4, 5],
                "weir-model test model: rank-3 input (rejected)"),
            "int_input.onnx": identity(
                "int_input", TensorProto.INT64, ["N", 2],
                "weir-model test model: int64 input (rejected)"),
            "fixed_batch.onnx": identity(
                "fixed_batch", TensorProto.DOUBLE, [1, 3],
                "weir-model test model: batch fixed at 1 in the file (made dynamic on load)"),
            "two_inputs.onnx": two_inputs(),
            "scalar_output.onnx": scalar_output(),
        }
        for name, model in test_models.items():
            _save(model, os.path.join(args.test_data, name))


if __name__ == "__main__":
    main()
