"""The graph machinery: accumulation, no_grad, detach, freed graphs, errors that name arguments."""
import numpy as np
import pytest

import pygpt
import pygpt.functional as F
from pygpt import Tensor, no_grad
from pygpt.backend import cuda_available


def test_diamond_graph_accumulates_both_paths():
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    y = x * 2.0
    z = y * y + y  # dz/dx = (2y + 1) * 2
    z.sum().backward()
    np.testing.assert_allclose(x.grad, (2 * (2 * x.data) + 1) * 2)


def test_leaf_gradients_accumulate_across_backward_calls():
    x = Tensor(np.array([1.0, -1.0]), requires_grad=True)
    (x * 3.0).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 3.0 + 2 * x.data)
    x.grad = None
    (x * 5.0).sum().backward()
    np.testing.assert_allclose(x.grad, [5.0, 5.0])


def test_leaf_grad_does_not_alias_data_or_other_buffers():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    x.reshape(2).sum().backward()
    x.grad += 1.0
    np.testing.assert_allclose(x.data, [1.0, 2.0])


def test_two_leaves_never_share_one_gradient_array():
    a = Tensor(np.ones(3, np.float32), requires_grad=True)
    b = Tensor(np.ones(3, np.float32), requires_grad=True)
    c = Tensor(np.full(3, 2, np.float32))
    ((a + b) * c).sum().backward()  # add hands one array to both a and b
    assert not np.shares_memory(a.grad, b.grad)
    (a * c).sum().backward()  # accumulates into a.grad in place: b.grad must not change
    np.testing.assert_allclose(a.grad, 4.0)
    np.testing.assert_allclose(b.grad, 2.0)


def test_no_grad_records_nothing():
    x = Tensor(np.ones(3), requires_grad=True)
    with no_grad():
        y = x * 2.0
        assert not pygpt.is_grad_enabled()
    assert pygpt.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf


def test_detach_cuts_the_graph():
    x = Tensor(np.ones(3), requires_grad=True)
    y = (x * 2.0).detach()
    z = (y * x).sum()
    z.backward()
    np.testing.assert_allclose(x.grad, y.data)


def test_second_backward_through_freed_graph_raises_and_retain_graph_allows_it():
    x = Tensor(np.array([2.0]), requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad, [8.0])
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_backward_needs_scalar_or_grad():
    x = Tensor(np.ones((2, 2)), requires_grad=True)
    y = x * 2.0
    with pytest.raises(ValueError, match="one-element tensor"):
        y.backward()
    with pytest.raises(ValueError, match=r"grad must have shape \(2, 2\)"):
        y.backward(np.ones(3))
    y.backward(np.full((2, 2), 0.5))
    np.testing.assert_allclose(x.grad, np.ones((2, 2)))
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.ones(2)).sum().backward()


def test_deep_chain_has_no_recursion_limit():
    x = Tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0001**5000], rtol=1e-10)


def test_graph_is_freed_after_backward():
    import gc
    import weakref

    x = Tensor(np.ones(10), requires_grad=True)
    h = x * 2.0
    ref = weakref.ref(h._node)
    loss = (h * h).sum()
    del h
    loss.backward()
    gc.collect()
    assert ref() is None  # saved arrays released


def test_dtype_and_device_errors_name_the_argument():
    a32 = Tensor(np.ones(2, dtype=np.float32))
    a64 = Tensor(np.ones(2, dtype=np.float64))
    with pytest.raises(TypeError, match="a and b must have the same dtype"):
        a32 + a64
    with pytest.raises(ValueError, match=r"shapes a=\(2,\) and b=\(3,\) do not broadcast"):
        a32 + Tensor(np.ones(3, dtype=np.float32))
    with pytest.raises(ValueError, match="matmul: a's last dimension"):
        F.matmul(Tensor(np.ones((2, 3))), Tensor(np.ones((2, 3))))
    with pytest.raises(TypeError, match="floating dtype"):
        Tensor(np.array([1, 2]), requires_grad=True)
    with pytest.raises(ValueError, match="cannot reshape"):
        a32.reshape(3)
    with pytest.raises(TypeError, match="x must be a pygpt Tensor"):
        F.gelu(np.ones(3))
    with pytest.raises(ValueError, match="approximate must be"):
        F.gelu(a32, approximate="fast")
    with pytest.raises(ValueError, match="layer_norm: weight must have shape"):
        F.layer_norm(a32, Tensor(np.ones(3, dtype=np.float32)), Tensor(np.ones(2, dtype=np.float32)))


def test_python_floats_become_float32_and_arrays_keep_dtype():
    assert pygpt.tensor([1.0, 2.0]).dtype == np.float32
    assert pygpt.tensor(np.ones(2)).dtype == np.float64
    assert pygpt.tensor([1, 2]).dtype.kind == "i"


@pytest.mark.skipif(cuda_available(), reason="checks the error raised when CUDA is absent")
def test_to_cuda_without_cupy_is_a_clear_error():
    with pytest.raises(RuntimeError, match="device 'cuda' needs CuPy and a CUDA GPU"):
        Tensor(np.ones(2)).to("cuda")


def test_info_reports_the_build():
    info = pygpt.info()
    assert info["version"] == pygpt.__version__
    assert isinstance(info["native"], bool)
    assert (info["native_reason"] is None) == info["native"]
