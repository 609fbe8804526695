"""Fit the float32 polynomial of the erf-form GELU (cpp/src/gelu_f32.inc).

    Phi(-a) = 2^(-a^2 / (2 ln 2)) * PM(t),   t = 1/(1 + 0.4 a),   0 <= a <= 13.27

PM(t) = Phi(-a) exp(a^2/2) (the Mills ratio over sqrt(2 pi)) is smooth and bounded on the whole range,
so one polynomial of degree 8 covers it, and the exponential is the one phi(a) needs anyway. Fitted for
*relative* error: weighted least squares on Chebyshev nodes, reweighted (Lawson's iteration) towards
minimax, against mpmath at 40 digits. Prints the C++ initialiser and the relative error of the float64
polynomial and of float32 Horner evaluation with float32 coefficients.

    python cpp/tools/fit_erf_float.py      (needs numpy and mpmath)
"""
import mpmath as mp
import numpy as np

mp.mp.dps = 40


def fit(f, lo, hi, deg, nodes=4000, iters=60):
    k = np.arange(nodes)
    xs = (lo + hi) / 2 + (hi - lo) / 2 * np.cos(np.pi * (k + 0.5) / nodes)
    ys = np.array([float(f(mp.mpf(x))) for x in xs])
    V = np.vander(xs, deg + 1, increasing=True) / ys[:, None]  # rows: p(x)/f(x)
    w = np.ones(nodes)
    for _ in range(iters):
        c, *_ = np.linalg.lstsq(V * np.sqrt(w)[:, None], np.sqrt(w), rcond=None)
        err = np.abs(V @ c - 1)
        w = w * err
        w /= w.sum()
    xt = np.linspace(lo, hi, 20001)
    yt = np.array([float(f(mp.mpf(x))) for x in xt])
    p64 = np.polyval(c[::-1], xt)
    x32, c32 = xt.astype(np.float32), c.astype(np.float32)
    p32 = np.full_like(x32, c32[-1])
    for cc in c32[-2::-1]:
        p32 = p32 * x32 + cc
    print(f"  relative error: float64 poly {np.max(np.abs(p64 / yt - 1)):.3g}, "
          f"float32 Horner {np.max(np.abs(p32.astype(np.float64) / yt - 1)):.3g}")
    return c


def show(name, c):
    print(f"{name} (c0 first): {{" + ", ".join(f"{v:.9g}f" for v in c) + "}")


C_T, A_MAX = 0.4, 13.27  # a beyond A_MAX: 2^(-a^2/(2 ln 2)) rounds to 0 in the kernel (exponent < -127)


def mills(t):
    a = (1 / t - 1) / C_T
    return mp.erfc(a / mp.sqrt(2)) / 2 * mp.exp(a * a / 2)


print(f"PM: Phi(-a) exp(a^2/2) in t = 1/(1 + {C_T} a) on a in [0, {A_MAX}]")
show("PM", fit(mills, 1 / (1 + C_T * A_MAX), 1.0, 8))
