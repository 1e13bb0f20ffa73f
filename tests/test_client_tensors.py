"""jobctl_client.tensors, the client's numpy <-> TensorProto without TensorFlow: every supported dtype and strings
round-trip exactly, and a malformed tensor is an error naming it (never a wrong array)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jobctl_client.protos.tensorflow.core.framework import tensor_pb2, types_pb2
from jobctl_client.tensors import DTYPES, TensorError, from_ndarray, to_ndarray

NUMERIC = [np.dtype(v[0]).newbyteorder("=") for v in DTYPES.values()]


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(st.sampled_from(NUMERIC), hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)))
def test_numbers_round_trip_exactly_through_the_wire(x):
    back = to_ndarray(tensor_pb2.TensorProto.FromString(from_ndarray(x).SerializeToString()))
    assert back.dtype == x.dtype and back.shape == x.shape
    np.testing.assert_array_equal(back, x)


def test_strings_round_trip_as_bytes():
    x = np.array([["a", "bé"], ["", "c"]], dtype=object)
    back = to_ndarray(from_ndarray(x))
    assert back.shape == (2, 2) and back.tolist() == [[b"a", "bé".encode()], [b"", b"c"]]


def test_typed_values_follow_tensorflows_fill_rule():
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.5])
    proto.tensor_shape.dim.add().size = 3
    np.testing.assert_array_equal(to_ndarray(proto), np.full(3, 1.5, np.float32))


@pytest.mark.parametrize("mutate, words", [
    (lambda p: setattr(p, "tensor_content", p.tensor_content[:-1]), "tensor 'x': tensor_content has 23 bytes"),
    (lambda p: p.tensor_shape.dim.add().__setattr__("size", -1), "negative dimension"),
    (lambda p: setattr(p, "dtype", types_pb2.DT_COMPLEX64), "dtype complex64 is not supported"),
])
def test_a_malformed_tensor_is_an_error_naming_it(mutate, words):
    proto = from_ndarray(np.zeros((2, 3), np.float32))
    mutate(proto)
    with pytest.raises(TensorError, match=words):
        to_ndarray(proto, "x")


def test_an_array_with_no_tensorproto_form_is_refused():
    with pytest.raises(TensorError, match="complex128"):
        from_ndarray(np.zeros(2, np.complex128))
