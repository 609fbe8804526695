// Softmax cross-entropy over the vocabulary, forward and backward fused with the softmax, on raw
// host pointers (llm.c style). logits is (rows, V), row-major and contiguous; targets (rows,).
//
//   forward:   lse[r]  = log Σ_j exp(z[r,j])            (computed as m + log Σ_j exp(z[r,j] − m), m = max_j z[r,j])
//              loss[r] = lse[r] − z[r, t[r]],  or 0 when t[r] == ignore_index
//   backward:  dz[r,j] = (exp(z[r,j] − lse[r]) − [j == t[r]]) · s[r],   s[r] = scale · (row_scale ? row_scale[r] : 1),
//              and dz[r,:] = 0 when t[r] == ignore_index
//
// The forward reads the logits once and keeps only lse (rows values); the probabilities are never
// stored: the backward recomputes each one and writes the gradient directly, in one pass. dlogits may
// be the logits buffer itself (in place). Targets are checked first (each in [0, V) or equal to
// ignore_index): std::invalid_argument before anything is read or written. rows, V >= 0; V >= 1 when
// rows > 0. Results do not depend on the thread count.
#pragma once

#include <cstdint>

namespace pygpt {

void cross_entropy_forward(const float* logits, const int64_t* targets, float* loss, float* lse, int64_t rows,
                           int64_t V, int64_t ignore_index);
void cross_entropy_forward(const double* logits, const int64_t* targets, double* loss, double* lse, int64_t rows,
                           int64_t V, int64_t ignore_index);

/// row_scale may be null (then s[r] = scale for every row). dlogits may equal logits.
void cross_entropy_backward(const float* logits, const int64_t* targets, const float* lse, const float* row_scale,
                            float scale, float* dlogits, int64_t rows, int64_t V, int64_t ignore_index);
void cross_entropy_backward(const double* logits, const int64_t* targets, const double* lse, const double* row_scale,
                            double scale, double* dlogits, int64_t rows, int64_t V, int64_t ignore_index);

/// Forward and backward at once, in place (a training step's loss that nobody reads the logits of):
/// loss and lse as cross_entropy_forward (the same bits), and logits overwritten with
///     dz[r,j] = softmax(z[r])_j · scale − [j == t[r]] · scale      (0 rows where t[r] == ignore_index).
/// Each row is read from memory once and exp evaluated once per element (stored, summed, then scaled),
/// half the exponentials of forward + backward; the gradient agrees with cross_entropy_backward's to
/// rounding (the target entry uses its formula exactly).
void cross_entropy_fused(float* logits, const int64_t* targets, float* loss, float* lse, float scale, int64_t rows,
                         int64_t V, int64_t ignore_index);
void cross_entropy_fused(double* logits, const int64_t* targets, double* loss, double* lse, double scale,
                         int64_t rows, int64_t V, int64_t ignore_index);

}  // namespace pygpt
