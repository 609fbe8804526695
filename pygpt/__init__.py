"""pygpt: GPT- and BERT-family pre-training and fine-tuning without a deep-learning framework."""
__version__ = "0.1.0"

from .backend import info  # noqa: E402
from . import backend as _backend, openblas as _openblas  # noqa: E402

if _backend.native is not None:
    try:
        _openblas.apply_default()  # idle OpenBLAS workers stop spinning before pygpt's kernels run
    except Exception:  # best effort (ctypes on a foreign BLAS build): never a reason to fail the import
        pass
from .autograd import Tensor, no_grad, enable_grad, is_grad_enabled, tensor  # noqa: E402
from . import functional  # noqa: E402

__all__ = ["Tensor", "tensor", "no_grad", "enable_grad", "is_grad_enabled", "functional", "info", "__version__"]

from .tokenizer import Tokenizer  # noqa: E402  (C++ BPE; pure-Python fallback without _C)
__all__ += ["Tokenizer"]
