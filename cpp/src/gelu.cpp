// GELU forward/backward on the CPU. Formulas in pygpt/gelu.h.
//
// Tanh form, rewritten so that nothing cancels and nothing overflows: with u = k(x + c x^3),
//   (1 + t)/2 = sigmoid(2u) =: s,   1 - t^2 = 4 s (1 - s),
//   f  = x s,   f' = s + 2 x s (1 - s) k (1 + 3 c x^2).
// With m = exp(-2|u|) in (0, 1] and r = 1/(1 + m):  s = r (u >= 0) or m r (u < 0), s (1 - s) = m r^2.
// The exponential is our own (simd_math.h), so the loops vectorise without -ffast-math.
// float (the hot path) uses base 2 directly: m = 2^a, a = -2k log2(e) |x| (1 + c x^2), from a
// degree-5 polynomial for 2^f on [-1/2, 1/2] (Gelu::exp2_m: no Cody-Waite split, no separate
// underflow test), and the forward is a single correctly rounded division f = num / (1 + m).
// Relative error vs float64: <= 8.5e-6 on [-9.9, 40] (at most ~2 eps times the condition number
// 1 + |x f'/f|: the large-|x| part is the rounding of a, which any float evaluation has).
//
// Erf form: Phi(x) = erfc(-x/sqrt 2)/2 keeps full relative accuracy for negative x, where
// 1 + erf(x/sqrt 2) would cancel. float: own polynomials (vectorised); double: libm erfc/exp.
//
// Both forms are evaluated in |x| (one clamp, tanh_clamp / erf_clamp) and the sign applied at the
// end; beyond the clamp the results are the exact limits (f = x or -0, f' = 1 or 0), so +-inf
// never meets inf * 0. The element functions are branch-free; each block loop is compiled for
// baseline x86-64, AVX2 and AVX-512 and picked at run time (cpu_dispatch.h), with identical bits.
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

namespace pygpt {
namespace {

constexpr int64_t kGrain = 1 << 15;  // elements per parallel chunk (128 KiB of float32)

template <class T>
struct Gelu {
    static constexpr T k = T(0.7978845608028654);           // sqrt(2/pi)
    static constexpr T c = T(0.044715);
    static constexpr T inv_sqrt2 = T(0.7071067811865476);    // 1/sqrt(2)
    static constexpr T inv_sqrt2pi = T(0.3989422804014327);  // 1/sqrt(2 pi)
    // tanh form: at |x| = 30, 2|u| > 1900 so exp(-2|u|) == 0 in float and double.
    // erf form: at |x| = 40, erfc(40/sqrt 2) and exp(-800) are 0 in float and double.
    static constexpr T tanh_clamp = T(30);
    static constexpr T erf_clamp = T(40);

    // ---- tanh form (vectorised) ----
    // Written in |x| with one clamp, so GCC emits a single select for it; the sign is applied
    // at the end. v = |u|/k = |x| (1 + c x^2), m = exp(-2k v), r = 1/(1 + m):
    //   x >= 0:  s = r,      f' = r + w        w = 2k |x| (1 + 3c x^2) m r^2
    //   x <  0:  s = m r,    f' = m r - w
    // float: m = 2^a with a = -2k log2(e) |x| (1 + c x^2) <= 0 (exp2_m below: no Cody-Waite split,
    // a degree-5 polynomial, one division f = num / (1 + m)). |x| is clamped at tanh_clamp_f, where
    // a is about -127: the exponent field of 2^round(a) is then 0, so m == 0 exactly and the
    // results are the exact limits (f = x or -0, f' = 1 or 0) without a second clamp.
    static constexpr float tanh_clamp_f = 10.03f;
    static constexpr float a1 = 2.3022082f;    // 2k log2(e); a = xn (a1 + a2 x^2) with xn = -|x|
    static constexpr float a2 = 0.10294324f;   // 2k log2(e) c
    PYGPT_ALWAYS_INLINE static float exp2_m(float a) {  // 2^a for a in [-127.5, 0] or NaN
        constexpr float shifter = 12582912.0f + 127.0f;   // 1.5 * 2^23 + bias
        const float t = a + shifter;                       // round(a) + bias in the low bits
        const float n = t - shifter;
        const float f = a - n;                             // exact, |f| <= 1/2
        const float scale = detail::bit_cast<float>(detail::bit_cast<uint32_t>(t) << 23);  // 2^n (0 at n = -127)
        // 2^f, minimax relative error 7.5e-8 on [-1/2, 1/2]
        float p = 0.00132764550f;
        p = p * f + 0.00967554003f;
        p = p * f + 0.0555071346f;
        p = p * f + 0.240221202f;
        p = p * f + 0.693146944f;
        p = p * f + 1.00000012f;
        return p * scale;
    }
    PYGPT_ALWAYS_INLINE static T tanh_fwd(T x) {
        if constexpr (std::is_same_v<T, float>) {
            float xn = -std::fabs(x);
            xn = xn < -tanh_clamp_f ? -tanh_clamp_f : xn;  // NaN passes through
            const float m = exp2_m(xn * (a1 + a2 * (xn * xn)));
            const float num = x >= 0.0f ? x : xn * m;  // s = 1/(1+m) or m/(1+m)
            return num / (1.0f + m);
        }
        const T ax = std::fabs(x);
        const T axc = ax > tanh_clamp ? tanh_clamp : ax;  // NaN passes through
        const T m = detail::exp_nonpositive(T(-2) * k * (axc * (T(1) + c * axc * axc)));
        const T r = T(1) / (T(1) + m);
        return x >= T(0) ? x * r : -(axc * (m * r));
    }
    PYGPT_ALWAYS_INLINE static T tanh_bwd(T x, T dy) {
        if constexpr (std::is_same_v<T, float>) {
            float xn = -std::fabs(x);
            xn = xn < -tanh_clamp_f ? -tanh_clamp_f : xn;
            const float x2 = xn * xn;
            const float m = exp2_m(xn * (a1 + a2 * x2));
            const float r = 1.0f / (1.0f + m);
            const float mr = m * r;
            // wn = x z' s (1 - s) for x < 0, its negative for x >= 0: z' = 2k (1 + 3c x^2)
            const float wn = (xn * (1.59576912f + 0.214064449f * x2)) * (mr * r);
            return dy * (x >= 0.0f ? r - wn : mr + wn);
        }
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
    /// float: own polynomials (vectorised, from cpp/tools/fit_erf_float.py), z = a/sqrt 2:
    ///   z < 1:   erf(z) = z PA(z^2),                    q = (1 - erf z)/2
    ///   z >= 1:  erfc(z) = exp(-z^2) PB(t), t = 1/(1 + z/2),  q = erfc(z)/2
    /// relative error of erf and erfc about 3e-7. double: libm erfc and exp.
    PYGPT_ALWAYS_INLINE static void normal_tail(T a, T& q, T& p) {
        if constexpr (std::is_same_v<T, float>) {
            const float z = a * 0.70710678f, w = z * z;
            const float e = detail::exp_nonpositive(-w);  // exp(-a^2/2)
            float pa = 7.85385771e-05f;
            pa = pa * w - 0.000801019252f;
            pa = pa * w + 0.00518832756f;
            pa = pa * w - 0.0268538119f;
            pa = pa * w + 0.112835851f;
            pa = pa * w - 0.376126258f;
            pa = pa * w + 1.12837917f;
            const float t = 1.0f / (1.0f + 0.5f * z);
            const float t2 = t * t, t4 = t2 * t2;  // Estrin: shorter dependency chain
            const float b01 = -5.06244285e-06f + t * 0.282221636f, b23 = 0.28077238f + t * 0.254155891f;
            const float b45 = 0.154118435f + t * 0.113395218f, b67 = 0.0150060041f + t * -0.178047699f;
            const float pb = (b01 + t2 * b23) + t4 * ((b45 + t2 * b67) + t4 * 0.0788133621f);
            q = z < 1.0f ? 0.5f - 0.5f * (z * pa) : 0.5f * (e * pb);
            p = 0.398942280f * e;
        } else {
            q = T(0.5) * std::erfc(a * inv_sqrt2);
            p = inv_sqrt2pi * std::exp(T(-0.5) * a * a);
        }
    }
};

// Block loops, compiled once per ISA variant (cpu_dispatch.h). Forward may run in place
// (y == x), so no __restrict there: GCC versions the loop with a runtime overlap check.
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
template <class T>
void fwd_block(const T* x, T* y, int64_t n, GeluApprox approx, detail::Isa isa) {
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
template <class T>
void bwd_block(const T* x, const T* dy, T* dx, int64_t n, GeluApprox approx, detail::Isa isa) {
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
    detail::parallel_chunks(n, kGrain, [&](int64_t b, int64_t e) { fwd_block(x + b, y + b, e - b, approx, isa); });
}

template <class T>
void backward_impl(const T* x, const T* dy, T* dx, int64_t n, GeluApprox approx) {
    check_args("gelu_backward", n, {{"x", x}, {"dy", dy}, {"dx", dx}});
    check_approx("gelu_backward", approx);
    const detail::Isa isa = detail::active_isa();
    detail::parallel_chunks(n, kGrain,
                            [&](int64_t b, int64_t e) { bwd_block(x + b, dy + b, dx + b, e - b, approx, isa); });
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
