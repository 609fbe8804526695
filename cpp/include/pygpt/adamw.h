// The Adam / AdamW update of one parameter tensor, in one pass over (p, g, m, v), on raw host pointers.
//
// Per element, with every coefficient first rounded to the array's type T, the operations and their
// order are those of torch's single-tensor Adam (and of pygpt.optim's NumPy path), so the results are
// bit-identical to both (no FMA contraction, IEEE sqrt and division):
//
//   p  = p · decay                           (only when decay != 1; AdamW: decay = 1 − lr·wd)
//   g' = g + p · l2                          (only when l2 != 0;    Adam:  l2 = wd)
//   m  = m + (g' − m) · (1 − β1)
//   v  = v · β2 + ((1 − β2) · g') · g'
//   p  = p − (step_size · m) / (sqrt(v) / sqrt(1 − β2^k) + eps),     step_size = lr / (1 − β1^k)
//
// p, m, v are updated in place; g is read only. The four arrays hold n elements and must not overlap.
// Throws std::invalid_argument for n < 0 or a null pointer with n > 0.
#pragma once

#include <cstdint>

namespace pygpt {

/// Per-step scalars of the update (see above); the caller computes them in double.
struct AdamStep {
    double decay = 1.0;                  // 1 − lr·wd (AdamW) or 1 (Adam)
    double l2 = 0.0;                     // wd (Adam) or 0 (AdamW)
    double one_minus_beta1 = 0.1;        // 1 − β1
    double beta2 = 0.999;                // β2
    double one_minus_beta2 = 0.001;      // 1 − β2
    double bias_correction2_sqrt = 1.0;  // sqrt(1 − β2^k)
    double eps = 1e-8;
    double step_size = 1e-3;             // lr / (1 − β1^k)
};

void adam_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamStep& step);
void adam_update(double* p, const double* g, double* m, double* v, int64_t n, const AdamStep& step);

}  // namespace pygpt
