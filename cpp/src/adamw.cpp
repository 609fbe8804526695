// Adam / AdamW update on the CPU, one pass over (p, g, m, v). Formulas and operation order in
// pygpt/adamw.h. The loop is element-wise (no reductions), split into fixed chunks over the library's
// threads. Each element goes through the same IEEE operations (mul, add, sub, div, sqrt: all correctly
// rounded, no FMA) on every ISA variant and in the scalar tail, so results are bit-identical across
// variants, thread counts, and to the NumPy path of pygpt.optim and torch's single-tensor Adam.
//
// The vector loop is written with intrinsics: GCC does not vectorise std::sqrt unless -fno-math-errno
// is given (the errno path of sqrt for negative arguments blocks it), and that flag is not ours to set
// here. Ops<T, ISA> wraps the handful of operations the update needs, per type and instruction set.
#include "pygpt/adamw.h"

#include <cmath>
#include <type_traits>
#include <stdexcept>
#include <string>

#include "cpu_dispatch.h"
#include "parallel_for.h"

#if PYGPT_HAVE_X86_VARIANTS
#include <immintrin.h>
// GCC 12's _mm512_sqrt_p[sd] pass _mm512_undefined_p[sd]() as the unused merge source, which
// -Wmaybe-uninitialized reports at every inlining site; it is harmless.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#endif

namespace pygpt {
namespace {

constexpr int64_t kGrain = int64_t(1) << 16;  // elements per parallel chunk

template <class T>
struct Coef {
    T decay, l2, omb1, b2, omb2, bc2, eps, step_size;
};

/// One element (the scalar loop and the vector tails).
template <class T, bool kDecay, bool kL2>
PYGPT_ALWAYS_INLINE void update_scalar(T* p, const T* g, T* m, T* v, int64_t n, const Coef<T>& c) {
    for (int64_t i = 0; i < n; ++i) {
        T pp = p[i];
        if (kDecay) pp = pp * c.decay;
        T gg = g[i];
        if (kL2) gg = gg + pp * c.l2;
        const T mm = m[i] + (gg - m[i]) * c.omb1;
        const T vv = v[i] * c.b2 + (gg * c.omb2) * gg;
        const T den = std::sqrt(vv) / c.bc2 + c.eps;
        p[i] = pp - (mm * c.step_size) / den;
        m[i] = mm;
        v[i] = vv;
    }
}

#if PYGPT_HAVE_X86_VARIANTS
/// The same with vector registers: O provides V (the register type), L (lanes) and the operations.
/// Defined once per ISA namespace (GCC only inlines target-specific code into functions of that target).
#define PYGPT_ADAM_VECTOR_LOOP(ATTR)                                                                      \
    template <class T, class O, bool kDecay, bool kL2>                                                    \
    ATTR PYGPT_ALWAYS_INLINE void update_vector(T* p, const T* g, T* m, T* v, int64_t n, const Coef<T>& c) { \
        using V = typename O::V;                                                                          \
        constexpr int64_t L = O::L;                                                                       \
        const V decay = O::set1(c.decay), l2 = O::set1(c.l2), omb1 = O::set1(c.omb1), b2 = O::set1(c.b2),  \
                omb2 = O::set1(c.omb2), bc2 = O::set1(c.bc2), eps = O::set1(c.eps),                       \
                ss = O::set1(c.step_size);                                                                \
        int64_t i = 0;                                                                                    \
        for (; i + L <= n; i += L) {                                                                      \
            V pp = O::load(p + i);                                                                        \
            if (kDecay) pp = O::mul(pp, decay);                                                           \
            V gg = O::load(g + i);                                                                        \
            if (kL2) gg = O::add(gg, O::mul(pp, l2));                                                     \
            const V m0 = O::load(m + i);                                                                  \
            const V mm = O::add(m0, O::mul(O::sub(gg, m0), omb1));                                        \
            const V vv = O::add(O::mul(O::load(v + i), b2), O::mul(O::mul(gg, omb2), gg));                \
            const V den = O::add(O::div(O::sqrt(vv), bc2), eps);                                          \
            O::store(p + i, O::sub(pp, O::div(O::mul(mm, ss), den)));                                     \
            O::store(m + i, mm);                                                                          \
            O::store(v + i, vv);                                                                          \
        }                                                                                                 \
        update_scalar<T, kDecay, kL2>(p + i, g + i, m + i, v + i, n - i, c);                              \
    }

// The operations of the update per instruction set and type (load/store unaligned).
namespace sse {
struct ps {
    using V = __m128;
    static constexpr int64_t L = 4;
    PYGPT_ALWAYS_INLINE static V set1(float a) { return _mm_set1_ps(a); }
    PYGPT_ALWAYS_INLINE static V load(const float* a) { return _mm_loadu_ps(a); }
    PYGPT_ALWAYS_INLINE static void store(float* a, V x) { _mm_storeu_ps(a, x); }
    PYGPT_ALWAYS_INLINE static V add(V a, V b) { return _mm_add_ps(a, b); }
    PYGPT_ALWAYS_INLINE static V sub(V a, V b) { return _mm_sub_ps(a, b); }
    PYGPT_ALWAYS_INLINE static V mul(V a, V b) { return _mm_mul_ps(a, b); }
    PYGPT_ALWAYS_INLINE static V div(V a, V b) { return _mm_div_ps(a, b); }
    PYGPT_ALWAYS_INLINE static V sqrt(V a) { return _mm_sqrt_ps(a); }
};
struct pd {
    using V = __m128d;
    static constexpr int64_t L = 2;
    PYGPT_ALWAYS_INLINE static V set1(double a) { return _mm_set1_pd(a); }
    PYGPT_ALWAYS_INLINE static V load(const double* a) { return _mm_loadu_pd(a); }
    PYGPT_ALWAYS_INLINE static void store(double* a, V x) { _mm_storeu_pd(a, x); }
    PYGPT_ALWAYS_INLINE static V add(V a, V b) { return _mm_add_pd(a, b); }
    PYGPT_ALWAYS_INLINE static V sub(V a, V b) { return _mm_sub_pd(a, b); }
    PYGPT_ALWAYS_INLINE static V mul(V a, V b) { return _mm_mul_pd(a, b); }
    PYGPT_ALWAYS_INLINE static V div(V a, V b) { return _mm_div_pd(a, b); }
    PYGPT_ALWAYS_INLINE static V sqrt(V a) { return _mm_sqrt_pd(a); }
};
PYGPT_ADAM_VECTOR_LOOP()
}  // namespace sse

namespace avx2 {
struct ps {
    using V = __m256;
    static constexpr int64_t L = 8;
    PYGPT_TARGET_AVX2 PYGPT_ALWAYS_INLINE static V set1(float a) { return _mm256_set1_ps(a); }
    PYGPT_TARGET_AVX2 PYGPT_ALWAYS_INLINE static V load(const float* a) { return _mm256_loadu_ps(a); }
    PYGPT_TARGET_AVX2 PYGPT_ALWAYS_INLINE static void store(float* a, V x) { _mm256_storeu_ps(a, x); }
    PYGPT_TARGET_AVX2 PYGPT_ALWAYS_INLINE static V add(V a, V b) { return _mm256_add_ps(a, b); }
    PYGPT_TARGET_AVX2 PYGPT_ALWAYS_INLINE static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
    PYGPT_TARGET_AVX2 PYGPT_ALWAYS_INLINE static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
    PYGPT_TARGET_AVX2 PYGPT_ALWAYS_INLINE static V div(V a, V b) { return _mm256_div_ps(a, b); }
    PYGPT_TARGET_AVX2 PYGPT_ALWAYS_INLINE static V sqrt(V a) { return _mm256_sqrt_ps(a); }
};
struct pd {
    using V = __m256d;
    static constexpr int64_t L = 4;
    PYGPT_TARGET_AVX2 PYGPT_ALWAYS_INLINE static V set1(double a) { return _mm256_set1_pd(a); }
    PYGPT_TARGET_AVX2 PYGPT_ALWAYS_INLINE static V load(const double* a) { return _mm256_loadu_pd(a); }
    PYGPT_TARGET_AVX2 PYGPT_ALWAYS_INLINE static void store(double* a, V x) { _mm256_storeu_pd(a, x); }
    PYGPT_TARGET_AVX2 PYGPT_ALWAYS_INLINE static V add(V a, V b) { return _mm256_add_pd(a, b); }
    PYGPT_TARGET_AVX2 PYGPT_ALWAYS_INLINE static V sub(V a, V b) { return _mm256_sub_pd(a, b); }
    PYGPT_TARGET_AVX2 PYGPT_ALWAYS_INLINE static V mul(V a, V b) { return _mm256_mul_pd(a, b); }
    PYGPT_TARGET_AVX2 PYGPT_ALWAYS_INLINE static V div(V a, V b) { return _mm256_div_pd(a, b); }
    PYGPT_TARGET_AVX2 PYGPT_ALWAYS_INLINE static V sqrt(V a) { return _mm256_sqrt_pd(a); }
};
PYGPT_ADAM_VECTOR_LOOP(PYGPT_TARGET_AVX2)
}  // namespace avx2

namespace avx512 {
struct ps {
    using V = __m512;
    static constexpr int64_t L = 16;
    PYGPT_TARGET_AVX512 PYGPT_ALWAYS_INLINE static V set1(float a) { return _mm512_set1_ps(a); }
    PYGPT_TARGET_AVX512 PYGPT_ALWAYS_INLINE static V load(const float* a) { return _mm512_loadu_ps(a); }
    PYGPT_TARGET_AVX512 PYGPT_ALWAYS_INLINE static void store(float* a, V x) { _mm512_storeu_ps(a, x); }
    PYGPT_TARGET_AVX512 PYGPT_ALWAYS_INLINE static V add(V a, V b) { return _mm512_add_ps(a, b); }
    PYGPT_TARGET_AVX512 PYGPT_ALWAYS_INLINE static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
    PYGPT_TARGET_AVX512 PYGPT_ALWAYS_INLINE static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
    PYGPT_TARGET_AVX512 PYGPT_ALWAYS_INLINE static V div(V a, V b) { return _mm512_div_ps(a, b); }
    PYGPT_TARGET_AVX512 PYGPT_ALWAYS_INLINE static V sqrt(V a) { return _mm512_sqrt_ps(a); }
};
struct pd {
    using V = __m512d;
    static constexpr int64_t L = 8;
    PYGPT_TARGET_AVX512 PYGPT_ALWAYS_INLINE static V set1(double a) { return _mm512_set1_pd(a); }
    PYGPT_TARGET_AVX512 PYGPT_ALWAYS_INLINE static V load(const double* a) { return _mm512_loadu_pd(a); }
    PYGPT_TARGET_AVX512 PYGPT_ALWAYS_INLINE static void store(double* a, V x) { _mm512_storeu_pd(a, x); }
    PYGPT_TARGET_AVX512 PYGPT_ALWAYS_INLINE static V add(V a, V b) { return _mm512_add_pd(a, b); }
    PYGPT_TARGET_AVX512 PYGPT_ALWAYS_INLINE static V sub(V a, V b) { return _mm512_sub_pd(a, b); }
    PYGPT_TARGET_AVX512 PYGPT_ALWAYS_INLINE static V mul(V a, V b) { return _mm512_mul_pd(a, b); }
    PYGPT_TARGET_AVX512 PYGPT_ALWAYS_INLINE static V div(V a, V b) { return _mm512_div_pd(a, b); }
    PYGPT_TARGET_AVX512 PYGPT_ALWAYS_INLINE static V sqrt(V a) { return _mm512_sqrt_pd(a); }
};
PYGPT_ADAM_VECTOR_LOOP(PYGPT_TARGET_AVX512)
}  // namespace avx512

template <class T, class OF, class OD>
using OpsFor = std::conditional_t<std::is_same_v<T, float>, OF, OD>;

#define PYGPT_ADAM_VARIANT(ISA, ATTR)                                                                   \
    template <class T>                                                                                  \
    ATTR void update_##ISA(T* p, const T* g, T* m, T* v, int64_t n, const Coef<T>& c, bool decay, bool l2) { \
        using O = OpsFor<T, ISA::ps, ISA::pd>;                                                          \
        if (decay) {                                                                                    \
            if (l2) ISA::update_vector<T, O, true, true>(p, g, m, v, n, c);                                  \
            else ISA::update_vector<T, O, true, false>(p, g, m, v, n, c);                                    \
        } else {                                                                                        \
            if (l2) ISA::update_vector<T, O, false, true>(p, g, m, v, n, c);                                 \
            else ISA::update_vector<T, O, false, false>(p, g, m, v, n, c);                                   \
        }                                                                                               \
    }

PYGPT_ADAM_VARIANT(sse, )
PYGPT_ADAM_VARIANT(avx2, PYGPT_TARGET_AVX2)
PYGPT_ADAM_VARIANT(avx512, PYGPT_TARGET_AVX512)
#else
template <class T>
void update_generic(T* p, const T* g, T* m, T* v, int64_t n, const Coef<T>& c, bool decay, bool l2) {
    if (decay) {
        if (l2) update_scalar<T, true, true>(p, g, m, v, n, c);
        else update_scalar<T, true, false>(p, g, m, v, n, c);
    } else {
        if (l2) update_scalar<T, false, true>(p, g, m, v, n, c);
        else update_scalar<T, false, false>(p, g, m, v, n, c);
    }
}
#endif

template <class T>
void impl(T* p, const T* g, T* m, T* v, int64_t n, const AdamStep& s) {
    if (n < 0) throw std::invalid_argument("adam_update: n must be >= 0, got " + std::to_string(n));
    if (n == 0) return;
    if (p == nullptr || g == nullptr || m == nullptr || v == nullptr)
        throw std::invalid_argument("adam_update: p, g, m and v must not be null with n > 0");
    // Like the NumPy path: the multiply by decay and the l2 term only when they change something.
    const bool decay = s.decay != 1.0, l2 = s.l2 != 0.0;
    const Coef<T> c{T(s.decay), T(s.l2), T(s.one_minus_beta1), T(s.beta2), T(s.one_minus_beta2),
                    T(s.bias_correction2_sqrt), T(s.eps), T(s.step_size)};
    const detail::Isa isa = detail::active_isa();
    detail::parallel_chunks(n, kGrain, [&](int64_t b, int64_t e) {
#if PYGPT_HAVE_X86_VARIANTS
        if (isa == detail::Isa::Avx512) return update_avx512(p + b, g + b, m + b, v + b, e - b, c, decay, l2);
        if (isa == detail::Isa::Avx2) return update_avx2(p + b, g + b, m + b, v + b, e - b, c, decay, l2);
        update_sse(p + b, g + b, m + b, v + b, e - b, c, decay, l2);
#else
        (void)isa;
        update_generic(p + b, g + b, m + b, v + b, e - b, c, decay, l2);
#endif
    });
}

}  // namespace

void adam_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamStep& step) {
    impl(p, g, m, v, n, step);
}
void adam_update(double* p, const double* g, double* m, double* v, int64_t n, const AdamStep& step) {
    impl(p, g, m, v, n, step);
}

}  // namespace pygpt
