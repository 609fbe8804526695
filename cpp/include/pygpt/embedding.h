// Embedding backward: scatter-add of the output gradient into the table's gradient, on raw pointers.
//
//   dW[ids[i], :] += dy[i, :]     for i = 0 .. n−1, in that order
//
// dy is (n, C), dW is (V, C), both row-major and contiguous; dW is accumulated into (zero it first for a
// plain gradient). Repeated ids add up in index order: the work is split over columns, never over ids,
// so the result does not depend on the thread count. Every id is checked to lie in [0, V) before dW is
// written (std::invalid_argument otherwise), as are n, V, C >= 0 and the pointers.
#pragma once

#include <cstdint>

namespace pygpt {

void embedding_backward(const int64_t* ids, const float* dy, float* dW, int64_t n, int64_t V, int64_t C);
void embedding_backward(const int64_t* ids, const double* dy, double* dW, int64_t n, int64_t V, int64_t C);

}  // namespace pygpt
