"""Fit the float32 erf/erfc polynomials used by the vectorised erf-form GELU (cpp/src/gelu.cpp).

    erf(z)  = z * PA(z^2)                          |z| < 1,  PA of degree 6 in w = z^2
    erfc(z) = exp(-z^2) * PB(t),  t = 1/(1 + z/2)   1 <= z <= 9.5, PB of degree 8 in t

Both are fitted for *relative* error: weighted least squares on Chebyshev nodes, reweighted
(Lawson's iteration) towards minimax, against mpmath at 40 digits. Prints C++ initialisers and the
relative error of the float64 polynomial and of float32 Horner evaluation with float32 coefficients.

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


print("PA: erf(z)/z in w = z^2 on [0, 1]")
show("PA", fit(lambda w: mp.erf(mp.sqrt(w)) / mp.sqrt(w) if w > 0 else 2 / mp.sqrt(mp.pi), 0.0, 1.0, 6))
print("PB: erfc(z) exp(z^2) in t = 1/(1 + z/2) on z in [1, 9.5]")
show("PB", fit(lambda t: mp.erfc(2 / t - 2) * mp.exp((2 / t - 2) ** 2), 1 / (1 + 9.5 / 2), 1 / (1 + 1 / 2), 8))
