// LayerNorm over the last axis, forward and backward, on raw host pointers (llm.c style).
// x, y, dy, dx are (rows, C) row-major and contiguous; w, b, dw, db are (C,); mean, rstd are (rows,).
//
//   forward:   mean = Σ_j x_j / C,   var = Σ_j (x_j − mean)² / C,   rstd = 1 / sqrt(var + eps)
//              y_j  = ((x_j − mean) · rstd) · w_j + b_j           (saves mean and rstd, not x̂)
//   backward:  x̂_j = (x_j − mean) · rstd,   h_j = dy_j · w_j
//              dx_j = rstd · (h_j − Σ h / C − x̂_j · Σ (h x̂) / C)
//              dw_j = Σ_rows dy_j x̂_j,     db_j = Σ_rows dy_j          (overwritten, not accumulated)
//
// The column sums over rows are accumulated in double in fixed row chunks that depend only on rows
// (never on the thread count), so results are identical for any number of threads. dx, dw, db may each
// be null (that gradient is skipped). y may not alias x. Throws std::invalid_argument for rows < 0,
// C < 1, eps < 0 or NaN, or a null pointer that is needed.
#pragma once

#include <cstdint>

namespace pygpt {

void layernorm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                       int64_t rows, int64_t C, double eps);
void layernorm_forward(const double* x, const double* w, const double* b, double* y, double* mean, double* rstd,
                       int64_t rows, int64_t C, double eps);

void layernorm_backward(const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                        float* dx, float* dw, float* db, int64_t rows, int64_t C);
void layernorm_backward(const double* x, const double* w, const double* mean, const double* rstd, const double* dy,
                        double* dx, double* dw, double* db, int64_t rows, int64_t C);

}  // namespace pygpt
