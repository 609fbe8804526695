// GELU activation, forward and backward, on raw host pointers (llm.c style).
//
//   tanh form (GPT-2):  f(x)  = 0.5 x (1 + t),  t = tanh(u),  u = k (x + c x^3),
//                       k = sqrt(2/pi), c = 0.044715
//                       f'(x) = 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 c x^2)
//   erf form  (BERT):   f(x)  = x Phi(x) = 0.5 x (1 + erf(x / sqrt(2)))
//                       f'(x) = Phi(x) + x phi(x),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
//
// All arrays hold n contiguous elements. Forward may run in place (y == x); the backward
// buffers must not overlap. Every function throws std::invalid_argument for n < 0 or for a
// null pointer with n > 0, before touching memory. Results do not depend on the thread count.
#pragma once

#include <cstdint>

namespace pygpt {

/// Which GELU formula: `Tanh` is the GPT approximation, `None` the exact erf form.
enum class GeluApprox { Tanh, None };

/// y[i] = f(x[i]) for i < n.
void gelu_forward(const float* x, float* y, int64_t n, GeluApprox approx);
void gelu_forward(const double* x, double* y, int64_t n, GeluApprox approx);

/// dx[i] = f'(x[i]) * dy[i] for i < n (overwrites dx; it does not accumulate).
void gelu_backward(const float* x, const float* dy, float* dx, int64_t n, GeluApprox approx);
void gelu_backward(const double* x, const double* dy, double* dx, int64_t n, GeluApprox approx);

}  // namespace pygpt
