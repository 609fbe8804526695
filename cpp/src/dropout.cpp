// Dropout (counter-based mask + scaling) on the CPU. Contract in pygpt/dropout.h.
//
// Element i's keep bit is a pure function of (key, offset + i), so chunks are independent and any
// element can be regenerated: the backward calls the same function on the gradient instead of storing
// a mask. The 64-bit multiplies of SplitMix64 are vectorised by GCC (emulated with 32-bit multiplies
// on AVX2).
#include "pygpt/dropout.h"

#include <stdexcept>
#include <string>

#include "cpu_dispatch.h"
#include "parallel_for.h"

namespace pygpt {
namespace {

constexpr int64_t kGrain = int64_t(1) << 15;
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;

PYGPT_ALWAYS_INLINE uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/// y[i] = x[i] * (keep_i ? scale : 0) with counters idx0 + i (idx0 = offset + first index + 1).
template <class T>
PYGPT_ALWAYS_INLINE void apply(const T* __restrict x, T* __restrict y, int64_t n, uint64_t base, uint64_t idx0,
                               uint64_t thr, T scale) {
    for (int64_t i = 0; i < n; ++i) {
        const uint64_t u = mix(base + (idx0 + uint64_t(i)) * kGolden);
        y[i] = x[i] * ((u >> 32) >= thr ? scale : T(0));
    }
}

template <class T>
PYGPT_ALWAYS_INLINE void apply_inplace(T* xy, int64_t n, uint64_t base, uint64_t idx0, uint64_t thr, T scale) {
    for (int64_t i = 0; i < n; ++i) {
        const uint64_t u = mix(base + (idx0 + uint64_t(i)) * kGolden);
        xy[i] = xy[i] * ((u >> 32) >= thr ? scale : T(0));
    }
}

#define PYGPT_DROPOUT_LOOPS(ISA, ATTR)                                                                       \
    template <class T>                                                                                       \
    ATTR void apply_##ISA(const T* x, T* y, int64_t n, uint64_t base, uint64_t idx0, uint64_t thr, T scale) { \
        if (static_cast<const void*>(x) == static_cast<const void*>(y)) apply_inplace(y, n, base, idx0, thr, scale); \
        else apply(x, y, n, base, idx0, thr, scale);                                                         \
    }

PYGPT_DROPOUT_LOOPS(baseline, )
#if PYGPT_HAVE_X86_VARIANTS
PYGPT_DROPOUT_LOOPS(avx2, PYGPT_TARGET_AVX2)
PYGPT_DROPOUT_LOOPS(avx512, PYGPT_TARGET_AVX512)
#endif

template <class T>
void impl(const T* x, T* y, int64_t n, uint64_t key, uint64_t threshold, T scale, uint64_t offset) {
    if (n < 0) throw std::invalid_argument("dropout_apply: n must be >= 0, got " + std::to_string(n));
    if (threshold > (uint64_t(1) << 32))
        throw std::invalid_argument("dropout_apply: threshold must be <= 2^32, got " + std::to_string(threshold));
    if (n == 0) return;
    if (x == nullptr || y == nullptr) throw std::invalid_argument("dropout_apply: x and y must not be null with n > 0");
    const uint64_t base = mix(key);
    const detail::Isa isa = detail::active_isa();
    detail::parallel_chunks(n, kGrain, [&](int64_t b, int64_t e) {
        const uint64_t idx0 = offset + uint64_t(b) + 1;
#if PYGPT_HAVE_X86_VARIANTS
        if (isa == detail::Isa::Avx512) return apply_avx512(x + b, y + b, e - b, base, idx0, threshold, scale);
        if (isa == detail::Isa::Avx2) return apply_avx2(x + b, y + b, e - b, base, idx0, threshold, scale);
#endif
        (void)isa;
        apply_baseline(x + b, y + b, e - b, base, idx0, threshold, scale);
    });
}

}  // namespace

uint64_t mix64(uint64_t z) { return mix(z); }

void dropout_apply(const float* x, float* y, int64_t n, uint64_t key, uint64_t threshold, float scale,
                   uint64_t offset) {
    impl(x, y, n, key, threshold, scale, offset);
}
void dropout_apply(const double* x, double* y, int64_t n, uint64_t key, uint64_t threshold, double scale,
                   uint64_t offset) {
    impl(x, y, n, key, threshold, scale, offset);
}

}  // namespace pygpt
