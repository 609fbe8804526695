// GELU forward/backward on the CPU. Formulas in pygpt/gelu.h.
//
// float32 (the hot path): gelu_f32.inc, both forms written once over float and the x86 vector types
// with explicit FMA, hand-vectorised here rather than by the compiler (GCC turns the clamps and
// selects into compare + blend pairs, which cost more than max/min and a sign-bit blend):
//   tanh: the signed form f = x / (1 + 2^a), a = -2u log2(e), one clamp pair, one division;
//   erf:  Phi(-|x|) = e^(-x^2/2) PM(1/(1 + 0.4|x|)), one exponential shared with phi, one division.
// Outputs of kStreamBytes and more are written with non-temporal stores, so the output's cache lines
// are not read first; the results are the same. The baseline (SSE2) variant runs the float code
// with libm's fmaf calls: the same bits, several times slower; it serves CPUs without AVX2+FMA,
// non-x86 builds (where std::fma is an instruction) and PYGPT_ISA=baseline. "Same bits" means every
// number; a NaN input gives a NaN whose sign is not specified: where two NaNs of opposite sign meet
// in a multiply (a negative NaN into the erf forward), x86 keeps the first operand's, and compilers
// order a multiply's operands as they like (clang differs from GCC there; so can GCC from one
// version of the surrounding code to the next). Checked with clang (`zig c++` 0.17, 4.4 Mi inputs
// and the specials): every number the same as GCC's.
//
// float64 (for checks), the structs below, compiler-vectorised:
//   tanh: with u = k(x + c x^3), (1 + t)/2 = sigmoid(2u) =: s, 1 - t^2 = 4 s (1 - s),
//         f = x s, f' = s + 2 x s (1 - s) k (1 + 3 c x^2); with m = exp(-2|u|) in (0, 1] and
//         r = 1/(1 + m): s = r (u >= 0) or m r (u < 0), s (1 - s) = m r^2. Own exponential
//         (simd_math.h), so the loop vectorises without -ffast-math.
//   erf:  Phi(x) = erfc(-x/sqrt 2)/2 (libm erfc/exp) keeps full relative accuracy for x < 0, where
//         1 + erf(x/sqrt 2) would cancel.
// Both are evaluated in |x| (one clamp) and the sign applied at the end; beyond the clamp the
// results are the exact limits (f = x or -0, f' = 1 or 0), so +-inf never meets inf * 0.
//
// Every loop is compiled for baseline x86-64, AVX2+FMA and AVX-512 and picked at run time
// (cpu_dispatch.h), with identical bits.
#include "pygpt/gelu.h"

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "cpu_dispatch.h"
#include "parallel_for.h"
#include "simd_math.h"

#if PYGPT_HAVE_X86_VARIANTS
#include <immintrin.h>
#endif

namespace pygpt {
namespace {

constexpr int64_t kGrain = 1 << 15;  // elements per parallel chunk (128 KiB of float32)

template <class T>
struct Gelu {  // float64 only (float32: gelu_f32.inc)
    static_assert(std::is_same_v<T, double>);
    static constexpr T k = T(0.7978845608028654);           // sqrt(2/pi)
    static constexpr T c = T(0.044715);
    static constexpr T inv_sqrt2 = T(0.7071067811865476);    // 1/sqrt(2)
    static constexpr T inv_sqrt2pi = T(0.3989422804014327);  // 1/sqrt(2 pi)
    // tanh form: at |x| = 30, 2|u| > 1900 so exp(-2|u|) == 0.
    // erf form: at |x| = 40, erfc(40/sqrt 2) and exp(-800) are 0.
    static constexpr T tanh_clamp = T(30);
    static constexpr T erf_clamp = T(40);

    // ---- tanh form ----
    // Written in |x| with one clamp, so GCC emits a single select for it; the sign is applied
    // at the end. v = |u|/k = |x| (1 + c x^2), m = exp(-2k v), r = 1/(1 + m):
    //   x >= 0:  s = r,      f' = r + w        w = 2k |x| (1 + 3c x^2) m r^2
    //   x <  0:  s = m r,    f' = m r - w
    PYGPT_ALWAYS_INLINE static T tanh_fwd(T x) {
        const T ax = std::fabs(x);
        const T axc = ax > tanh_clamp ? tanh_clamp : ax;  // NaN passes through
        const T m = detail::exp_nonpositive(T(-2) * k * (axc * (T(1) + c * axc * axc)));
        const T r = T(1) / (T(1) + m);
        return x >= T(0) ? x * r : -(axc * (m * r));
    }
    PYGPT_ALWAYS_INLINE static T tanh_bwd(T x, T dy) {
        const T ax = std::fabs(x);
        const T axc = ax > tanh_clamp ? tanh_clamp : ax;
        const T x2 = axc * axc;
        const T m = detail::exp_nonpositive(T(-2) * k * (axc * (T(1) + c * x2)));
        const T r = T(1) / (T(1) + m);
        const T mr = m * r;
        const T w = T(2) * k * axc * (T(1) + T(3) * c * x2) * (mr * r);
        return dy * (x >= T(0) ? r + w : mr - w);
    }

    // ---- erf form, in |x| like the tanh form: q = Phi(-|x|) (no cancellation), p = phi(|x|)
    //   x >= 0:  f = x (1 - q),   f' = (1 - q) + |x| p
    //   x <  0:  f = -|x| q,      f' = q - |x| p
    PYGPT_ALWAYS_INLINE static T erf_fwd(T x) {
        const T ax = std::fabs(x);
        const T axc = ax > erf_clamp ? erf_clamp : ax;
        T q, p;
        normal_tail(axc, q, p);
        return x >= T(0) ? x * (T(1) - q) : -(axc * q);
    }
    PYGPT_ALWAYS_INLINE static T erf_bwd(T x, T dy) {
        const T ax = std::fabs(x);
        const T axc = ax > erf_clamp ? erf_clamp : ax;
        T q, p;
        normal_tail(axc, q, p);
        const T xp = axc * p;
        return dy * (x >= T(0) ? (T(1) - q) + xp : q - xp);
    }
    /// q = Phi(-a) = erfc(a/sqrt 2)/2 and p = phi(a) = exp(-a^2/2)/sqrt(2 pi), for a >= 0 (or NaN).
    PYGPT_ALWAYS_INLINE static void normal_tail(T a, T& q, T& p) {
        q = T(0.5) * std::erfc(a * inv_sqrt2);
        p = inv_sqrt2pi * std::exp(T(-0.5) * a * a);
    }
};

// ---- float32, both forms: gelu_f32.inc once per variant ----
constexpr int64_t kStreamBytes = int64_t(16) << 20;  // outputs this large skip the cache (see top)

#define F32_INLINE PYGPT_ALWAYS_INLINE
namespace f32_baseline {
#include "gelu_f32.inc"
template <class Approx>
void fwd(const float* x, float* y, int64_t n, bool /*stream*/) {
    for (int64_t i = 0; i < n; ++i) y[i] = Approx::fwd(x[i]);
}
template <class Approx>
void bwd(const float* x, const float* dy, float* dx, int64_t n, bool /*stream*/) {
    for (int64_t i = 0; i < n; ++i) dx[i] = Approx::bwd(x[i], dy[i]);
}
}  // namespace f32_baseline
#undef F32_INLINE

#if PYGPT_HAVE_X86_VARIANTS
// One loop shape for both vector widths: peel scalars until the output is aligned (streaming stores
// need it), then whole vectors, software-pipelined (prep of the next vector before finish of this
// one; see gelu_f32.inc), then the scalar tail; fence so other threads see streamed lines. Each
// vector is loaded before its own store and the look-ahead never reads a stored one, so the forward
// may run in place.
#define PYGPT_GELU_F32_LOOPS(TARGET, WIDTH, LOADU, STOREU, STREAM)                                \
    TARGET PYGPT_ALWAYS_INLINE void store(float* p, decltype(LOADU(p)) v, bool stream) {          \
        if (stream) STREAM(p, v);                                                                 \
        else STOREU(p, v);                                                                        \
    }                                                                                             \
    template <class Approx>                                                                       \
    TARGET void fwd(const float* x, float* y, int64_t n, bool stream) {                           \
        int64_t i = 0;                                                                            \
        if (stream)                                                                               \
            for (; i < n && reinterpret_cast<uintptr_t>(y + i) % (WIDTH * 4) != 0; ++i)           \
                y[i] = Approx::fwd(x[i]);                                                         \
        if (i + WIDTH <= n) {                                                                     \
            auto state = Approx::fwd_prep(LOADU(x + i));                                          \
            for (; i + 2 * WIDTH <= n; i += WIDTH) {                                              \
                const auto next = Approx::fwd_prep(LOADU(x + i + WIDTH));                         \
                store(y + i, Approx::fwd_finish(state), stream);                                  \
                state = next;                                                                     \
            }                                                                                     \
            store(y + i, Approx::fwd_finish(state), stream);                                      \
            i += WIDTH;                                                                           \
        }                                                                                         \
        for (; i < n; ++i) y[i] = Approx::fwd(x[i]);                                              \
        if (stream) _mm_sfence();                                                                 \
    }                                                                                             \
    template <class Approx>                                                                       \
    TARGET void bwd(const float* x, const float* dy, float* dx, int64_t n, bool stream) {         \
        int64_t i = 0;                                                                            \
        if (stream)                                                                               \
            for (; i < n && reinterpret_cast<uintptr_t>(dx + i) % (WIDTH * 4) != 0; ++i)          \
                dx[i] = Approx::bwd(x[i], dy[i]);                                                 \
        if (i + WIDTH <= n) {                                                                     \
            auto state = Approx::bwd_prep(LOADU(x + i));                                          \
            for (; i + 2 * WIDTH <= n; i += WIDTH) {                                              \
                const auto next = Approx::bwd_prep(LOADU(x + i + WIDTH));                         \
                store(dx + i, Approx::bwd_finish(state, LOADU(dy + i)), stream);                  \
                state = next;                                                                     \
            }                                                                                     \
            store(dx + i, Approx::bwd_finish(state, LOADU(dy + i)), stream);                      \
            i += WIDTH;                                                                           \
        }                                                                                         \
        for (; i < n; ++i) dx[i] = Approx::bwd(x[i], dy[i]);                                      \
        if (stream) _mm_sfence();                                                                 \
    }

#define F32_INLINE PYGPT_ALWAYS_INLINE PYGPT_TARGET_AVX2
namespace f32_avx2 {
F32_INLINE __m256 splat_as(__m256 /*type*/, float c) { return _mm256_set1_ps(c); }
F32_INLINE __m256 vmax(__m256 a, __m256 b) { return _mm256_max_ps(a, b); }
F32_INLINE __m256 vmin(__m256 a, __m256 b) { return _mm256_min_ps(a, b); }
F32_INLINE __m256 vfma(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
F32_INLINE __m256 vfms(__m256 a, __m256 b, __m256 c) { return _mm256_fmsub_ps(a, b, c); }
F32_INLINE __m256 vabs(__m256 a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
F32_INLINE __m256 vsel_neg(__m256 s, __m256 a, __m256 b) { return _mm256_blendv_ps(a, b, s); }
F32_INLINE __m256 pow2_bits(__m256 t) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(t), 23)); }
#include "gelu_f32.inc"
PYGPT_GELU_F32_LOOPS(PYGPT_TARGET_AVX2, 8, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_stream_ps)
}  // namespace f32_avx2
#undef F32_INLINE

// GCC 12's AVX-512 intrinsics pass _mm512_undefined_*() (a self-initialised variable) as the
// unused merge source of max/min/shift, which -Wmaybe-uninitialized reports at every use.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#define F32_INLINE PYGPT_ALWAYS_INLINE PYGPT_TARGET_AVX512
namespace f32_avx512 {
F32_INLINE __m512 splat_as(__m512 /*type*/, float c) { return _mm512_set1_ps(c); }
F32_INLINE __m512 vmax(__m512 a, __m512 b) { return _mm512_max_ps(a, b); }
F32_INLINE __m512 vmin(__m512 a, __m512 b) { return _mm512_min_ps(a, b); }
F32_INLINE __m512 vfma(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
F32_INLINE __m512 vfms(__m512 a, __m512 b, __m512 c) { return _mm512_fmsub_ps(a, b, c); }
F32_INLINE __m512 vabs(__m512 a) { return _mm512_abs_ps(a); }
F32_INLINE __m512 vsel_neg(__m512 s, __m512 a, __m512 b) {
    const __m512i sign = _mm512_set1_epi32(int32_t(0x80000000u));
    return _mm512_mask_blend_ps(_mm512_test_epi32_mask(_mm512_castps_si512(s), sign), a, b);
}
F32_INLINE __m512 pow2_bits(__m512 t) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(t), 23)); }
#include "gelu_f32.inc"
PYGPT_GELU_F32_LOOPS(PYGPT_TARGET_AVX512, 16, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_stream_ps)
}  // namespace f32_avx512
#undef F32_INLINE
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#undef PYGPT_GELU_F32_LOOPS
#endif

// float64 block loops (Gelu<double>), compiled once per ISA variant (cpu_dispatch.h). Forward may
// run in place (y == x), so no __restrict there: GCC versions the loop with a runtime overlap check.
#define PYGPT_GELU_LOOPS(ISA, ATTR)                                                            \
    template <class T>                                                                         \
    ATTR void tanh_fwd_##ISA(const T* x, T* y, int64_t n) {                                    \
        for (int64_t i = 0; i < n; ++i) y[i] = Gelu<T>::tanh_fwd(x[i]);                        \
    }                                                                                          \
    template <class T>                                                                         \
    ATTR void tanh_bwd_##ISA(const T* __restrict x, const T* __restrict dy, T* __restrict dx,  \
                             int64_t n) {                                                      \
        for (int64_t i = 0; i < n; ++i) dx[i] = Gelu<T>::tanh_bwd(x[i], dy[i]);                \
    }                                                                                          \
    template <class T>                                                                         \
    ATTR void erf_fwd_##ISA(const T* x, T* y, int64_t n) {                                     \
        for (int64_t i = 0; i < n; ++i) y[i] = Gelu<T>::erf_fwd(x[i]);                         \
    }                                                                                          \
    template <class T>                                                                         \
    ATTR void erf_bwd_##ISA(const T* __restrict x, const T* __restrict dy, T* __restrict dx,   \
                            int64_t n) {                                                       \
        for (int64_t i = 0; i < n; ++i) dx[i] = Gelu<T>::erf_bwd(x[i], dy[i]);                 \
    }

PYGPT_GELU_LOOPS(baseline, )
#if PYGPT_HAVE_X86_VARIANTS
PYGPT_GELU_LOOPS(avx2, PYGPT_TARGET_AVX2)
PYGPT_GELU_LOOPS(avx512, PYGPT_TARGET_AVX512)
#endif

/// One block [0, n) of y = f(x) with the active ISA variant.
void fwd_block(const float* x, float* y, int64_t n, GeluApprox approx, detail::Isa isa, bool stream) {
    const bool tanh = approx == GeluApprox::Tanh;
#if PYGPT_HAVE_X86_VARIANTS
    if (isa == detail::Isa::Avx512)
        return tanh ? f32_avx512::fwd<f32_avx512::TanhForm>(x, y, n, stream)
                    : f32_avx512::fwd<f32_avx512::ErfForm>(x, y, n, stream);
    if (isa == detail::Isa::Avx2)
        return tanh ? f32_avx2::fwd<f32_avx2::TanhForm>(x, y, n, stream)
                    : f32_avx2::fwd<f32_avx2::ErfForm>(x, y, n, stream);
#endif
    (void)isa;
    return tanh ? f32_baseline::fwd<f32_baseline::TanhForm>(x, y, n, stream)
                : f32_baseline::fwd<f32_baseline::ErfForm>(x, y, n, stream);
}

void fwd_block(const double* x, double* y, int64_t n, GeluApprox approx, detail::Isa isa, bool /*stream*/) {
#if PYGPT_HAVE_X86_VARIANTS
    if (isa == detail::Isa::Avx512) {
        if (approx == GeluApprox::Tanh) tanh_fwd_avx512(x, y, n);
        else erf_fwd_avx512(x, y, n);
        return;
    }
    if (isa == detail::Isa::Avx2) {
        if (approx == GeluApprox::Tanh) tanh_fwd_avx2(x, y, n);
        else erf_fwd_avx2(x, y, n);
        return;
    }
#endif
    (void)isa;
    if (approx == GeluApprox::Tanh) tanh_fwd_baseline(x, y, n);
    else erf_fwd_baseline(x, y, n);
}

/// One block [0, n) of dx = f'(x) dy with the active ISA variant.
void bwd_block(const float* x, const float* dy, float* dx, int64_t n, GeluApprox approx, detail::Isa isa,
               bool stream) {
    const bool tanh = approx == GeluApprox::Tanh;
#if PYGPT_HAVE_X86_VARIANTS
    if (isa == detail::Isa::Avx512)
        return tanh ? f32_avx512::bwd<f32_avx512::TanhForm>(x, dy, dx, n, stream)
                    : f32_avx512::bwd<f32_avx512::ErfForm>(x, dy, dx, n, stream);
    if (isa == detail::Isa::Avx2)
        return tanh ? f32_avx2::bwd<f32_avx2::TanhForm>(x, dy, dx, n, stream)
                    : f32_avx2::bwd<f32_avx2::ErfForm>(x, dy, dx, n, stream);
#endif
    (void)isa;
    return tanh ? f32_baseline::bwd<f32_baseline::TanhForm>(x, dy, dx, n, stream)
                : f32_baseline::bwd<f32_baseline::ErfForm>(x, dy, dx, n, stream);
}

void bwd_block(const double* x, const double* dy, double* dx, int64_t n, GeluApprox approx, detail::Isa isa,
               bool /*stream*/) {
#if PYGPT_HAVE_X86_VARIANTS
    if (isa == detail::Isa::Avx512) {
        if (approx == GeluApprox::Tanh) tanh_bwd_avx512(x, dy, dx, n);
        else erf_bwd_avx512(x, dy, dx, n);
        return;
    }
    if (isa == detail::Isa::Avx2) {
        if (approx == GeluApprox::Tanh) tanh_bwd_avx2(x, dy, dx, n);
        else erf_bwd_avx2(x, dy, dx, n);
        return;
    }
#endif
    (void)isa;
    if (approx == GeluApprox::Tanh) tanh_bwd_baseline(x, dy, dx, n);
    else erf_bwd_baseline(x, dy, dx, n);
}

void check_args(const char* fn, int64_t n, std::initializer_list<std::pair<const char*, const void*>> ptrs) {
    if (n < 0) throw std::invalid_argument(std::string(fn) + ": n must be >= 0, got " + std::to_string(n));
    if (n == 0) return;
    for (const auto& [name, p] : ptrs)
        if (p == nullptr) throw std::invalid_argument(std::string(fn) + ": " + name + " is null with n > 0");
}

void check_approx(const char* fn, GeluApprox a) {
    if (a != GeluApprox::Tanh && a != GeluApprox::None)
        throw std::invalid_argument(std::string(fn) + ": unknown GeluApprox value");
}

template <class T>
void forward_impl(const T* x, T* y, int64_t n, GeluApprox approx) {
    check_args("gelu_forward", n, {{"x", x}, {"y", y}});
    check_approx("gelu_forward", approx);
    const detail::Isa isa = detail::active_isa();
    const bool stream = n * int64_t(sizeof(T)) >= kStreamBytes;
    detail::parallel_chunks(n, kGrain,
                            [&](int64_t b, int64_t e) { fwd_block(x + b, y + b, e - b, approx, isa, stream); });
}

template <class T>
void backward_impl(const T* x, const T* dy, T* dx, int64_t n, GeluApprox approx) {
    check_args("gelu_backward", n, {{"x", x}, {"dy", dy}, {"dx", dx}});
    check_approx("gelu_backward", approx);
    const detail::Isa isa = detail::active_isa();
    const bool stream = n * int64_t(sizeof(T)) >= kStreamBytes;
    detail::parallel_chunks(n, kGrain, [&](int64_t b, int64_t e) {
        bwd_block(x + b, dy + b, dx + b, e - b, approx, isa, stream);
    });
}

}  // namespace

void gelu_forward(const float* x, float* y, int64_t n, GeluApprox approx) { forward_impl(x, y, n, approx); }
void gelu_forward(const double* x, double* y, int64_t n, GeluApprox approx) { forward_impl(x, y, n, approx); }
void gelu_backward(const float* x, const float* dy, float* dx, int64_t n, GeluApprox approx) {
    backward_impl(x, dy, dx, n, approx);
}
void gelu_backward(const double* x, const double* dy, double* dx, int64_t n, GeluApprox approx) {
    backward_impl(x, dy, dx, n, approx);
}

}  // namespace pygpt
