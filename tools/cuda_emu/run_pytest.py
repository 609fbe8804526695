"""Run pytest with pygpt's CUDA path on the CPU: the GPU tests without a GPU (a development aid).

pygpt._C is replaced by a build whose CUDA kernels are the cpp/cuda/*.cu sources compiled as C++ and
run by the fiber emulator (cpp/cuda/emulate.h), and CuPy by a NumPy stand-in (tools/cuda_emu/cupy:
arrays are a NumPy subclass named cupy.ndarray exposing __cuda_array_interface__ with host pointers).
So pygpt.cuda_kernels, the functional.py hooks, the bindings' argument handling and the `gpu` tests
themselves run for real, against the emulated kernels:

    cmake -S . -B build/cuda-emu -DPYGPT_CUDA=OFF -DPYGPT_BUILD_TESTS=OFF -DPYGPT_BUILD_CUDA_EMU_PYTHON=ON
    cmake --build build/cuda-emu -j 2 --target pygpt_C_cuda_emu
    python tools/cuda_emu/run_pytest.py build/cuda-emu/cuda_emu_python -q -m gpu tests/test_cuda_kernels.py tests/test_cuda.py

It proves the code paths and the arithmetic, not the GPU: no timing, no device limits, no real CUDA
runtime (device and pointer checks are stand-ins: test_pointer_checks_on_a_gpu fails here by design),
and CuPy's own JIT kernels (pygpt.optim's Adam/norm) are replaced by NumPy expressions.
"""
import glob
import importlib.util
import os
import sys

import numpy as np


def main() -> int:
    if len(sys.argv) < 2 or not os.path.isdir(sys.argv[1]):
        print(__doc__)
        return 2
    found = glob.glob(os.path.join(sys.argv[1], "_C.*.so")) + glob.glob(os.path.join(sys.argv[1], "_C*.pyd"))
    if not found:
        print(f"no _C module in {sys.argv[1]} (build the pygpt_C_cuda_emu target)")
        return 2
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the cupy / cupyx stand-ins
    spec = importlib.util.spec_from_file_location("pygpt._C", found[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["pygpt._C"] = module

    import cupy  # the stand-in

    from pygpt import backend, optim

    # A stand-in array is also a NumPy array: route it as CuPy, never to the CPU kernels.
    get_xp, use_native, to_numpy = backend.get_xp, backend.use_native, backend.to_numpy
    backend.get_xp = lambda a: cupy if isinstance(a, cupy.ndarray) else get_xp(a)
    backend.use_native = lambda a: not isinstance(a, cupy.ndarray) and use_native(a)
    backend.to_numpy = lambda a: np.array(a) if isinstance(a, cupy.ndarray) else to_numpy(a)
    optim._CUDA_KERNELS["adam"] = None  # CuPy JIT kernels are not emulated: the generic xp path
    optim._CUDA_KERNELS["sumsq"] = lambda x: cupy.asarray(np.sum(np.asarray(x, np.float64) ** 2))

    import pytest

    return pytest.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
