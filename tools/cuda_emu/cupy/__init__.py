"""A NumPy-backed stand-in for CuPy (tools/cuda_emu/run_pytest.py): pygpt's CUDA path on the CPU.

Arrays are NumPy arrays of a subclass named cupy.ndarray that expose __cuda_array_interface__ with their
host pointers; every NumPy function is re-exported with its array results wrapped; reductions return
0-d arrays as in CuPy. Only what pygpt and its tests use is here."""
import numpy as _np
from types import SimpleNamespace as _NS

__version__ = "0.0-emulated"


class _Data:
    def __init__(self, a):
        self.ptr = a.__array_interface__["data"][0]


class ndarray(_np.ndarray):
    def __array_wrap__(self, obj, context=None, return_scalar=False):
        return _np.asarray(obj).view(ndarray)  # reductions stay 0-d arrays, as in CuPy

    @property
    def device(self):
        return _NS(id=0)

    @property
    def data(self):
        return _Data(self)

    def get(self):
        return _np.array(self)

    @property
    def __cuda_array_interface__(self):
        ai = self.__array_interface__
        return {"shape": ai["shape"], "typestr": ai["typestr"], "data": ai["data"], "strides": ai["strides"],
                "version": 3}


def _wrap(x):
    if isinstance(x, _np.ndarray) and not isinstance(x, ndarray):
        return x.view(ndarray)
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


def _unwrap(x):
    return _np.asarray(x) if isinstance(x, ndarray) else x


def _fn(f):
    def g(*a, **k):
        return _wrap(f(*a, **k))
    g.__name__ = getattr(f, "__name__", "f")
    return g


def __getattr__(name):
    attr = getattr(_np, name)
    if isinstance(attr, (type, _np.ufunc)) or not callable(attr):
        return attr
    return _fn(attr)


def asnumpy(a):
    return _np.array(a)


def array_equal(a, b, equal_nan=False):
    return _wrap(_np.asarray(_np.array_equal(_np.asarray(a), _np.asarray(b), equal_nan=equal_nan)))


class _Gen:
    def __init__(self, seed):
        self._g = _np.random.default_rng(seed)

    def __getattr__(self, name):
        return _fn(getattr(self._g, name))


random = _NS(default_rng=lambda seed=None: _Gen(seed),
             standard_normal=lambda size=None, dtype=_np.float64: _wrap(
                 _np.random.default_rng(0).standard_normal(size, dtype=dtype)))


class _Stream:
    ptr = 0


class _Device:
    def __init__(self, i=0):
        self.id = i

    def synchronize(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


class OutOfMemoryError(MemoryError):
    pass


cuda = _NS(get_current_stream=lambda: _Stream(), Device=_Device,
           runtime=_NS(getDevice=lambda: 0, getDeviceCount=lambda: 1),
           memory=_NS(OutOfMemoryError=OutOfMemoryError))


class _Pool:
    def used_bytes(self):
        return 0

    def free_all_blocks(self):
        pass


def get_default_memory_pool():
    return _Pool()
