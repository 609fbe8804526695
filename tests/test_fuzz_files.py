"""Hostile weight files: thousands of mutated safetensors / checkpoint files must either load or raise
a clear ValueError — never another exception, a crash, or an allocation larger than the file."""
import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pygpt.checkpoint import load_checkpoint
from pygpt.models import GPT, GPTConfig
from pygpt.safetensors import load_file, read_header, save_file

CFG = GPTConfig(vocab_size=11, n_ctx=4, n_layer=1, n_head=1, d_model=4, d_ff=8)


@pytest.fixture(scope="module")
def valid_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("fuzz") / "model.safetensors"
    save_file(GPT(CFG).state_dict(), p, metadata={"format": "pygpt", "config": json.dumps(CFG.to_dict())})
    return p.read_bytes()


def _load_into_model(path):
    tensors, _ = load_file(path)
    GPT(CFG).load_state_dict(tensors, strict=True)


def _check(path):
    """Only ValueError (SafetensorsError is one) may escape; a loaded file never exceeds its size."""
    try:
        tensors, _ = load_file(path)
    except ValueError:
        return
    assert sum(a.nbytes for a in tensors.values()) <= path.stat().st_size
    try:
        GPT(CFG).load_state_dict(tensors, strict=True)
    except ValueError:
        pass


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("header_len"), st.integers(0, 2**64 - 1), st.just(0)),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(muts=st.lists(mutation, min_size=1, max_size=4))
def test_byte_mutations(tmp_path, valid_file, muts):
    data = bytearray(valid_file)
    for kind, pos, val in muts:
        if kind == "flip" and data:
            data[pos % len(data)] ^= val
        elif kind == "truncate":
            del data[pos % (len(data) + 1):]
        elif kind == "insert":
            data.insert(pos % (len(data) + 1), val)
        elif kind == "header_len":
            data[:8] = struct.pack("<Q", pos)
    p = tmp_path / "m.safetensors"
    p.write_bytes(bytes(data))
    _check(p)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["wte.weight", "wpe.weight", "h.0.ln_1.weight"]),
       field=st.sampled_from(["dtype", "shape", "data_offsets"]), value=json_values)
def test_lying_header_fields(tmp_path, valid_file, name, field, value):
    n = struct.unpack("<Q", valid_file[:8])[0]
    header = json.loads(valid_file[8:8 + n])
    header[name][field] = value
    raw = json.dumps(header).encode()
    p = tmp_path / "h.safetensors"
    p.write_bytes(struct.pack("<Q", len(raw)) + raw + valid_file[8 + n:])
    _check(p)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.lists(st.integers(0, 2**40), min_size=1, max_size=4), dtype=st.sampled_from(["F32", "F64", "I8"]))
def test_huge_claimed_shapes_are_rejected_before_allocation(tmp_path, shape, dtype):
    header = {"x": {"dtype": dtype, "shape": shape, "data_offsets": [0, 16]}}
    raw = json.dumps(header).encode()
    p = tmp_path / "big.safetensors"
    p.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 16)
    count = int(np.prod(shape, dtype=object)) * {"F32": 4, "F64": 8, "I8": 1}[dtype]
    if count == 16:
        read_header(p)
    else:
        with pytest.raises(ValueError, match="needs"):
            read_header(p)


def test_nan_and_integer_weights_are_refused(tmp_path):
    state = {k: v.copy() for k, v in GPT(CFG).state_dict().items()}
    state["h.0.mlp.c_fc.weight"][0, 0] = np.nan
    with pytest.raises(ValueError, match="'h.0.mlp.c_fc.weight' contains NaN"):
        GPT(CFG).load_state_dict(state)
    state = {k: v.copy() for k, v in GPT(CFG).state_dict().items()}
    state["wpe.weight"] = state["wpe.weight"].astype(np.int32)
    with pytest.raises(ValueError, match="'wpe.weight' has dtype int32"):
        GPT(CFG).load_state_dict(state)


def test_a_weights_file_is_not_a_checkpoint(tmp_path, valid_file):
    p = tmp_path / "w.safetensors"
    p.write_bytes(valid_file)
    with pytest.raises(ValueError, match="not a pygpt checkpoint"):
        load_checkpoint(p)


@pytest.mark.parametrize("header", [b"[" * 100_000, b'{"a":' * 100_000])
def test_deeply_nested_header_is_a_value_error(tmp_path, header):
    """json raises RecursionError (not a ValueError) on deep nesting; the reader turns it into one."""
    p = tmp_path / "deep.safetensors"
    p.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(ValueError, match="not valid UTF-8 JSON"):
        load_file(p)


@pytest.mark.parametrize("optimizer", ["[" * 100_000, "[1, 2]", "3", "null", "{"])
def test_malformed_checkpoint_metadata_is_a_value_error(tmp_path, optimizer):
    meta = {"format": "pygpt-checkpoint", "step": "1", "model_config": "{}", "train_config": "{}",
            "sampler": "{}", "dropout": "{}", "tokenizer": "", "optimizer": optimizer}
    p = tmp_path / "ckpt.safetensors"
    save_file({"model/x": np.zeros(2, np.float32)}, p, metadata=meta)
    with pytest.raises(ValueError, match="malformed"):
        load_checkpoint(p)
