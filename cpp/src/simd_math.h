// Private helpers: element functions written so GCC vectorises the loops that call them
// (no libm calls, no branches: selects only). Always inlined, so each ISA variant of a loop
// (cpu_dispatch.h) gets its own vector code. Not installed; not part of the API.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cpu_dispatch.h"  // PYGPT_ALWAYS_INLINE

namespace pygpt::detail {

template <class T>
struct FloatTraits;

template <>
struct FloatTraits<float> {
    using UInt = uint32_t;
    static constexpr int mant_bits = 23;
    static constexpr UInt bias = 127;
    static constexpr float ln2_hi = 0.693359375f;             // 9 significant bits: n * ln2_hi is exact
    static constexpr float ln2_lo = -2.12194440054690583e-4f;  // ln 2 - ln2_hi
    static constexpr float min_arg = -87.3365447505531f;       // -126 ln 2: below it exp(a) < 2^-126
};

template <>
struct FloatTraits<double> {
    using UInt = uint64_t;
    static constexpr int mant_bits = 52;
    static constexpr UInt bias = 1023;
    static constexpr double ln2_hi = 0.6931467056274414;       // 20 significant bits
    static constexpr double ln2_lo = 4.749325039031672e-07;
    static constexpr double min_arg = -708.3964185322641;      // -1022 ln 2
};

template <class To, class From>
PYGPT_ALWAYS_INLINE To bit_cast(const From& v) {
    static_assert(sizeof(To) == sizeof(From));
    To out;
    std::memcpy(&out, &v, sizeof(To));
    return out;
}

/// e^r for |r| <= ln2/2 by its Taylor series (Horner): relative error below 1 ulp of T
/// before rounding (float: r^8/8! <= 5.3e-9; double: r^14/14! <= 7e-18).
PYGPT_ALWAYS_INLINE float exp_reduced(float r) {
    // Estrin's scheme: the same polynomial with a dependency chain of depth 4 instead of 8.
    const float r2 = r * r, r4 = r2 * r2;
    const float p01 = 1.0f + r, p23 = 0.5f + r * (1.0f / 6);
    const float p45 = 1.0f / 24 + r * (1.0f / 120), p67 = 1.0f / 720 + r * (1.0f / 5040);
    return (p01 + r2 * p23) + r4 * (p45 + r2 * p67);
}

PYGPT_ALWAYS_INLINE double exp_reduced(double r) {
    double p = 1.0 / 6227020800.0;  // 1/13!
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    return p * r + 1.0;
}

/// e^a for a <= 0 (including -inf): a = n ln2 + r, e^a = 2^n e^r (Cody-Waite reduction).
/// Results below the smallest normal number are flushed to +0 (no denormals); NaN stays NaN.
template <class T>
PYGPT_ALWAYS_INLINE T exp_nonpositive(T a) {
    using F = FloatTraits<T>;
    using U = typename F::UInt;
    // Adding 1.5 * 2^mant rounds a*log2(e) to an integer that lands in the low mantissa bits.
    constexpr T shifter = T(1.5) * T(U(1) << F::mant_bits);
    const T t = a * T(1.4426950408889634) + shifter;
    const T n = t - shifter;                      // round(a / ln 2), as a float
    const T r = (a - n * F::ln2_hi) - n * F::ln2_lo;  // |r| <= ln2/2
    const U k = bit_cast<U>(t) - bit_cast<U>(shifter);  // n as a two's-complement integer
    const T scale = bit_cast<T>(U(k + F::bias) << F::mant_bits);  // 2^n, valid for n >= -bias+1
    const T e = exp_reduced(r) * scale;
    return a < F::min_arg ? T(0) : e;
}

}  // namespace pygpt::detail
