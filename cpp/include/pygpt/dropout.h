// Dropout with the counter-based mask of pygpt.random, fused with the scaling, on raw host pointers.
//
//   u_i  = mix64(mix64(key) + (offset + i + 1) · 0x9E3779B97F4A7C15)     (SplitMix64 finalizer, wrapping)
//   keep = (u_i >> 32) >= threshold,        threshold = round(p · 2^32)
//   y_i  = x_i · (keep ? scale : 0),         scale = 1 / (1 − p) rounded to T
//
// The same function serves forward (x = input) and backward (x = output gradient): the mask is
// regenerated from (key, offset, i), never stored. The products are the ones NumPy computes for
// x * (keep.astype(T) * scale), so results are bit-identical to pygpt.functional's reference.
// y may equal x (in place) but must not otherwise overlap it. Throws std::invalid_argument for n < 0,
// a null pointer with n > 0, or threshold > 2^32.
#pragma once

#include <cstdint>

namespace pygpt {

/// SplitMix64 finalizer (the same as pygpt.random.mix64).
uint64_t mix64(uint64_t z);

void dropout_apply(const float* x, float* y, int64_t n, uint64_t key, uint64_t threshold, float scale,
                   uint64_t offset = 0);
void dropout_apply(const double* x, double* y, int64_t n, uint64_t key, uint64_t threshold, double scale,
                   uint64_t offset = 0);

}  // namespace pygpt
