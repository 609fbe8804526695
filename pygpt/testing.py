"""The gradient checker: analytic gradients from `backward` against central differences.

    check_grad(fn, inputs)   # raises GradientCheckError with where and by how much, else returns a report

The scalar being differentiated is L = Σ w ∘ fn(*inputs) for a fixed random w (so every output
element matters). Two modes:

* ``"all"``: perturb every input element by ±eps: ∂L/∂x_i ≈ (L(x + eps e_i) − L(x − eps e_i)) / 2eps.
  Cost: 2 forward passes per element; for small inputs.
* ``"directional"``: one random unit direction u over all inputs: the directional derivative
  (L(x + eps u) − L(x − eps u)) / 2eps must equal Σ_i ⟨∂L/∂x_i, u_i⟩. Two forward passes in all.
* ``"auto"``: "all" up to `max_all_elements` input elements, else "directional".

Inputs are cast to float64 before checking (integer inputs such as token ids pass through).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .autograd import Tensor, no_grad
from .backend import get_xp, to_numpy


class GradientCheckError(AssertionError):
    """Analytic and numeric gradients disagree; the message says where and by how much."""


@dataclass
class GradReport:
    mode: str
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0
    checked: list = field(default_factory=list)  # (input index, elements compared)


def _scalar(fn, tensors, w):
    with no_grad():
        out = fn(*tensors)
    return float((to_numpy(out.data).astype(np.float64) * w).sum())


def check_grad(fn, inputs, *, mode: str = "auto", eps: float = 1e-6, atol: float = 1e-6, rtol: float = 1e-5,
               seed: int = 0, max_all_elements: int = 256, wrt=None) -> GradReport:
    """Check ``fn(*inputs)``'s gradients w.r.t. every floating input (or the indices in `wrt`).

    `fn` takes and returns pygpt Tensors; `inputs` are arrays, numbers or Tensors. Floating inputs
    become float64 leaf tensors. Passes when |analytic − numeric| ≤ atol + rtol·|numeric| everywhere."""
    if mode not in ("auto", "all", "directional"):
        raise ValueError(f"mode must be 'auto', 'all' or 'directional', got {mode!r}")
    rng = np.random.default_rng(seed)
    arrays = []
    for x in inputs:
        a = x.data if isinstance(x, Tensor) else x
        if not hasattr(a, "dtype"):
            a = np.asarray(a)
        if a.dtype.kind == "f":
            a = a.astype(np.float64)
        arrays.append(a)
    float_idx = [i for i, a in enumerate(arrays) if a.dtype.kind == "f"]
    if wrt is not None:
        float_idx = [i for i in float_idx if i in set(wrt)]
    if not float_idx:
        raise ValueError("check_grad: no floating input to differentiate with respect to")

    def make(arrs, grad=True):
        return [Tensor(a, requires_grad=grad and i in float_idx) if a.dtype.kind == "f" else a
                for i, a in enumerate(arrs)]

    # analytic
    tensors = make(arrays)
    out = fn(*tensors)
    if not isinstance(out, Tensor):
        raise TypeError(f"check_grad: fn must return a Tensor, got {type(out).__name__}")
    w = rng.standard_normal(out.shape)
    xp = get_xp(out.data)
    out.backward(xp.asarray(w, dtype=out.dtype))
    analytic = {}
    for i in float_idx:
        g = tensors[i].grad
        analytic[i] = np.zeros(arrays[i].shape) if g is None else to_numpy(g).astype(np.float64)

    total = sum(arrays[i].size for i in float_idx)
    if mode == "auto":
        mode = "all" if total <= max_all_elements else "directional"
    report = GradReport(mode=mode)

    if mode == "all":
        for i in float_idx:
            base = arrays[i]
            numeric = np.zeros(base.shape)
            flat_n = numeric.reshape(-1)
            for j in range(base.size):
                arrs = list(arrays)
                for sign in (+1, -1):
                    pert = base.copy()
                    pert.reshape(-1)[j] += sign * eps
                    arrs[i] = pert
                    val = _scalar(fn, make(arrs, grad=False), w)
                    flat_n[j] += sign * val
            numeric /= 2 * eps
            _compare(analytic[i], numeric, atol, rtol, f"input {i} (shape {base.shape})", report)
            report.checked.append((i, base.size))
        return report

    # directional
    dirs = {}
    for i in float_idx:
        u = rng.standard_normal(arrays[i].shape)
        dirs[i] = u
    norm = np.sqrt(sum(float((u * u).sum()) for u in dirs.values())) or 1.0
    for i in dirs:
        dirs[i] /= norm
    vals = []
    for sign in (+1, -1):
        arrs = list(arrays)
        for i in float_idx:
            arrs[i] = arrays[i] + sign * eps * get_xp(arrays[i]).asarray(dirs[i])
        vals.append(_scalar(fn, make(arrs, grad=False), w))
    numeric = (vals[0] - vals[1]) / (2 * eps)
    predicted = sum(float((analytic[i] * dirs[i]).sum()) for i in float_idx)
    _compare(np.array([predicted]), np.array([numeric]), atol, rtol, "directional derivative over all inputs", report)
    report.checked.append(("directional", total))
    return report


def _compare(analytic, numeric, atol, rtol, what, report):
    err = np.abs(analytic - numeric)
    tol = atol + rtol * np.abs(numeric)
    report.max_abs_err = max(report.max_abs_err, float(err.max(initial=0.0)))
    rel = err / np.maximum(np.abs(numeric), 1e-12)
    report.max_rel_err = max(report.max_rel_err, float(rel.max(initial=0.0)))
    bad = err > tol
    if bad.any() or not np.isfinite(analytic).all():
        idx = np.unravel_index(int(np.argmax(np.where(np.isfinite(err), err - tol, np.inf))), err.shape)
        raise GradientCheckError(
            f"gradient mismatch for {what}: {int(bad.sum())} of {err.size} elements out of tolerance; "
            f"worst at index {tuple(int(k) for k in idx)}: analytic={analytic[idx]:.8g}, numeric={numeric[idx]:.8g}, "
            f"abs err={err[idx]:.3g} > tol={tol[idx]:.3g} (atol={atol}, rtol={rtol})"
        )
