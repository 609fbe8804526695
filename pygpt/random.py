"""Counter-based random bits for dropout: the same mask on NumPy, CuPy and the C++/CUDA kernels.

A dropout call draws one 64-bit `key` from a `Generator`; element i of the mask is then a pure
function of (key, i):

    u_i  = mix64(mix64(key) + (i + 1) · 0x9E3779B97F4A7C15)      (SplitMix64 finalizer)
    keep = (u_i >> 32) >= round(p · 2³²)

so a kernel can regenerate any element (for attention: i = ((b·H + h)·Tq + row)·Tk + col) without
storing the mask, and a resumed run continues from the generator's (seed, counter).
"""
from __future__ import annotations

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


def mix64(z):
    """SplitMix64 finalizer on uint64 arrays (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def mix64_int(z: int) -> int:
    """The same finalizer on a Python int (for keys and tests)."""
    z &= _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def keep_threshold(p: float) -> int:
    """Elements whose top 32 random bits are below this are dropped."""
    return int(round(p * 2.0**32))


def random_bits(key: int, shape, xp=np, offset: int = 0):
    """The top 32 bits of u_i for i = offset .. offset + prod(shape) - 1, as uint64, in `shape`."""
    n = int(np.prod(shape, dtype=np.int64))
    base = np.uint64(mix64_int(key))
    idx = xp.arange(offset + 1, offset + n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        u = mix64(idx * GOLDEN + base)
    return (u >> np.uint64(32)).reshape(shape)


def keep_mask(key: int, shape, p: float, xp=np, offset: int = 0):
    """Boolean mask, True = keep, each element dropped with probability p (to 2⁻³²)."""
    if p <= 0.0:
        return xp.ones(shape, dtype=bool)
    return random_bits(key, shape, xp, offset) >= np.uint64(keep_threshold(p))


class Generator:
    """Seeded source of dropout keys. ``next_key()`` returns a new 64-bit key per call.

    State is (seed, counter), both plain ints, so checkpoints can store it as JSON."""

    def __init__(self, seed: int = 0):
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed) & _MASK64
        self.counter = 0

    def next_key(self) -> int:
        self.counter += 1
        return mix64_int(self.seed * 0x100000001B3 + self.counter)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "counter": self.counter}

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict`: {"seed": int, "counter": int >= 0}; ValueError otherwise."""
        if not isinstance(state, dict) or set(state) != {"seed", "counter"}:
            raise ValueError(f"dropout generator state must be {{'seed': int, 'counter': int}}, got {state!r:.100}")
        for key in ("seed", "counter"):
            v = state[key]
            if isinstance(v, bool) or not isinstance(v, int) or (key == "counter" and v < 0):
                raise ValueError(f"dropout generator state {key!r} must be a{' non-negative' * (key == 'counter')} "
                                 f"integer, got {v!r:.100}")
        self.seed = state["seed"]
        self.counter = state["counter"]
