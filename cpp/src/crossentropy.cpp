// Softmax cross-entropy forward/backward on the CPU. Formulas in pygpt/crossentropy.h.
//
// One row of logits (V values; 196 KiB at V = 50257 in float32) is handled by one thread: the forward
// reads it from memory once for the maximum and again, now from L2, for Σ exp(z − m); the backward
// reads it once more and writes the gradient in the same pass. Sums use a fixed number of lanes
// (independent accumulators, so GCC vectorises them without -ffast-math), are closed per block of
// kBlock elements and the block sums added in double: the order is fixed by V alone, so results are
// identical for every ISA variant and thread count. The exponential is simd_math.h's (vectorised,
// arguments <= 0 by construction: z − max and z − lse).
#include "pygpt/crossentropy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "cpu_dispatch.h"
#include "parallel_for.h"
#include "simd_math.h"

namespace pygpt {
namespace {

constexpr int64_t kBlock = 1024;         // exp values buffered on the stack, then summed
constexpr int64_t kGrain = int64_t(1) << 15;  // elements per parallel chunk (whole rows)

template <class T>
struct Lanes {
    static constexpr int W = sizeof(T) == 4 ? 16 : 8;  // two AVX2 registers, one AVX-512 register
};

/// Σ of the W lanes in a fixed pairwise order.
template <class T>
PYGPT_ALWAYS_INLINE T lane_sum(T* a) {
    for (int w = Lanes<T>::W / 2; w > 0; w /= 2)
        for (int j = 0; j < w; ++j) a[j] += a[j + w];
    return a[0];
}

/// max_j z[j] (NaN entries are skipped here; they make Σ exp NaN below). V >= 1.
template <class T>
PYGPT_ALWAYS_INLINE T row_max(const T* z, int64_t V) {
    constexpr int W = Lanes<T>::W;
    T acc[W];
    for (int j = 0; j < W; ++j) acc[j] = -std::numeric_limits<T>::infinity();
    int64_t i = 0;
    for (; i + W <= V; i += W)
        for (int j = 0; j < W; ++j) acc[j] = z[i + j] > acc[j] ? z[i + j] : acc[j];
    for (int j = 0; i + j < V; ++j) acc[j] = z[i + j] > acc[j] ? z[i + j] : acc[j];
    T m = acc[0];
    for (int j = 1; j < W; ++j) m = acc[j] > m ? acc[j] : m;
    return m;
}

/// Σ_j exp(z[j] − m), in double across blocks.
template <class T>
PYGPT_ALWAYS_INLINE double row_sum_exp(const T* z, int64_t V, T m) {
    constexpr int W = Lanes<T>::W;
    alignas(64) T buf[kBlock];
    double total = 0.0;
    for (int64_t b0 = 0; b0 < V; b0 += kBlock) {
        const int64_t n = std::min(kBlock, V - b0);
        const T* zb = z + b0;
        for (int64_t k = 0; k < n; ++k) buf[k] = detail::exp_nonpositive(T(zb[k] - m));
        T acc[W] = {};
        int64_t k = 0;
        for (; k + W <= n; k += W)
            for (int j = 0; j < W; ++j) acc[j] += buf[k + j];
        for (int j = 0; k + j < n; ++j) acc[j] += buf[k + j];
        total += double(lane_sum(acc));
    }
    return total;
}

/// The same sum, block by block in the same order (identical bits), storing exp(z[j] − m) into z.
template <class T>
PYGPT_ALWAYS_INLINE double row_sum_exp_store(T* z, int64_t V, T m) {
    constexpr int W = Lanes<T>::W;
    double total = 0.0;
    for (int64_t b0 = 0; b0 < V; b0 += kBlock) {
        const int64_t n = std::min(kBlock, V - b0);
        T* zb = z + b0;
        for (int64_t k = 0; k < n; ++k) zb[k] = detail::exp_nonpositive(T(zb[k] - m));
        T acc[W] = {};
        int64_t k = 0;
        for (; k + W <= n; k += W)
            for (int j = 0; j < W; ++j) acc[j] += zb[k + j];
        for (int j = 0; k + j < n; ++j) acc[j] += zb[k + j];
        total += double(lane_sum(acc));
    }
    return total;
}

/// Forward and backward of rows [r0, r1) in place: the row is read from memory once (max), then
/// stays in L2 while exp(z − m) is stored over it and summed, and scaled into the gradient.
template <class T>
PYGPT_ALWAYS_INLINE void fused_rows(T* logits, const int64_t* targets, T* loss, T* lse, T scale, int64_t r0,
                                    int64_t r1, int64_t V, int64_t ignore_index) {
    for (int64_t r = r0; r < r1; ++r) {
        T* z = logits + r * V;
        const int64_t t = targets[r];
        const T m = row_max(z, V);
        const T zt = t == ignore_index ? T(0) : z[t];  // read before the row is overwritten
        const double sum = row_sum_exp_store(z, V, m);
        const T l = T(std::log(sum)) + m;  // as forward_rows: the same lse and loss bits
        lse[r] = l;
        if (t == ignore_index) {
            loss[r] = T(0);
            std::fill(z, z + V, T(0));
            continue;
        }
        loss[r] = l - zt;
        const T c = T(double(scale) / sum);  // softmax_j · scale = exp(z_j − m) · (scale / Σ)
        for (int64_t j = 0; j < V; ++j) z[j] = z[j] * c;
        z[t] = (detail::exp_nonpositive(T(zt - l)) - T(1)) * scale;  // the backward kernel's formula
    }
}

template <class T>
PYGPT_ALWAYS_INLINE void forward_rows(const T* logits, const int64_t* targets, T* loss, T* lse, int64_t r0,
                                      int64_t r1, int64_t V, int64_t ignore_index) {
    for (int64_t r = r0; r < r1; ++r) {
        const T* z = logits + r * V;
        const T m = row_max(z, V);
        const T l = T(std::log(row_sum_exp(z, V, m))) + m;
        lse[r] = l;
        const int64_t t = targets[r];
        loss[r] = t == ignore_index ? T(0) : l - z[t];
    }
}

/// dz = exp(z − lse) s, out of place (the buffers do not overlap).
template <class T>
PYGPT_ALWAYS_INLINE void scaled_softmax(const T* __restrict z, T* __restrict d, int64_t V, T l, T s) {
    for (int64_t j = 0; j < V; ++j) d[j] = detail::exp_nonpositive(T(z[j] - l)) * s;
}

/// The same in place (zd holds z on entry, the gradient on exit).
template <class T>
PYGPT_ALWAYS_INLINE void scaled_softmax_inplace(T* zd, int64_t V, T l, T s) {
    for (int64_t j = 0; j < V; ++j) zd[j] = detail::exp_nonpositive(T(zd[j] - l)) * s;
}

template <class T>
PYGPT_ALWAYS_INLINE void backward_rows(const T* logits, const int64_t* targets, const T* lse, const T* row_scale,
                                       T scale, T* dlogits, int64_t r0, int64_t r1, int64_t V,
                                       int64_t ignore_index) {
    const bool in_place = static_cast<const void*>(logits) == static_cast<const void*>(dlogits);
    for (int64_t r = r0; r < r1; ++r) {
        const T* z = logits + r * V;
        T* d = dlogits + r * V;
        const int64_t t = targets[r];
        if (t == ignore_index) {
            std::fill(d, d + V, T(0));
            continue;
        }
        const T s = row_scale != nullptr ? scale * row_scale[r] : scale;
        const T l = lse[r];
        const T zt = z[t];  // read before an in-place pass overwrites it
        if (in_place) scaled_softmax_inplace(d, V, l, s);
        else scaled_softmax(z, d, V, l, s);
        d[t] = (detail::exp_nonpositive(T(zt - l)) - T(1)) * s;
    }
}

#define PYGPT_CE_LOOPS(ISA, ATTR)                                                                          \
    template <class T>                                                                                     \
    ATTR void forward_##ISA(const T* z, const int64_t* t, T* loss, T* lse, int64_t r0, int64_t r1, int64_t V, \
                            int64_t ig) {                                                                  \
        forward_rows(z, t, loss, lse, r0, r1, V, ig);                                                      \
    }                                                                                                      \
    template <class T>                                                                                     \
    ATTR void backward_##ISA(const T* z, const int64_t* t, const T* lse, const T* rs, T scale, T* d,         \
                             int64_t r0, int64_t r1, int64_t V, int64_t ig) {                              \
        backward_rows(z, t, lse, rs, scale, d, r0, r1, V, ig);                                             \
    }                                                                                                      \
    template <class T>                                                                                     \
    ATTR void fused_##ISA(T* z, const int64_t* t, T* loss, T* lse, T scale, int64_t r0, int64_t r1,          \
                          int64_t V, int64_t ig) {                                                         \
        fused_rows(z, t, loss, lse, scale, r0, r1, V, ig);                                                 \
    }

PYGPT_CE_LOOPS(baseline, )
#if PYGPT_HAVE_X86_VARIANTS
PYGPT_CE_LOOPS(avx2, PYGPT_TARGET_AVX2)
PYGPT_CE_LOOPS(avx512, PYGPT_TARGET_AVX512)
#endif

void check_common(const char* fn, int64_t rows, int64_t V, const int64_t* targets, int64_t ignore_index) {
    if (rows < 0) throw std::invalid_argument(std::string(fn) + ": rows must be >= 0, got " + std::to_string(rows));
    if (V < 0 || (rows > 0 && V < 1))
        throw std::invalid_argument(std::string(fn) + ": V must be >= 1, got " + std::to_string(V));
    if (rows == 0) return;
    if (targets == nullptr) throw std::invalid_argument(std::string(fn) + ": targets is null with rows > 0");
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t t = targets[r];
        if (t != ignore_index && (t < 0 || t >= V))
            throw std::invalid_argument(std::string(fn) + ": targets[" + std::to_string(r) + "] = " + std::to_string(t) +
                                        " is outside [0, " + std::to_string(V) + ") and is not ignore_index (" +
                                        std::to_string(ignore_index) + ")");
    }
}

void check_ptr(const char* fn, const char* name, const void* p, int64_t rows) {
    if (rows > 0 && p == nullptr) throw std::invalid_argument(std::string(fn) + ": " + name + " is null with rows > 0");
}

int64_t grain_rows(int64_t V) { return std::max<int64_t>(1, kGrain / std::max<int64_t>(V, 1)); }

template <class T>
void forward_impl(const T* z, const int64_t* t, T* loss, T* lse, int64_t rows, int64_t V, int64_t ig) {
    const char* fn = "cross_entropy_forward";
    check_ptr(fn, "logits", z, rows);
    check_ptr(fn, "loss", loss, rows);
    check_ptr(fn, "lse", lse, rows);
    check_common(fn, rows, V, t, ig);
    const detail::Isa isa = detail::active_isa();
    detail::parallel_chunks(rows, grain_rows(V), [&](int64_t r0, int64_t r1) {
#if PYGPT_HAVE_X86_VARIANTS
        if (isa == detail::Isa::Avx512) return forward_avx512(z, t, loss, lse, r0, r1, V, ig);
        if (isa == detail::Isa::Avx2) return forward_avx2(z, t, loss, lse, r0, r1, V, ig);
#endif
        (void)isa;
        forward_baseline(z, t, loss, lse, r0, r1, V, ig);
    });
}

template <class T>
void backward_impl(const T* z, const int64_t* t, const T* lse, const T* rs, T scale, T* d, int64_t rows, int64_t V,
                   int64_t ig) {
    const char* fn = "cross_entropy_backward";
    check_ptr(fn, "logits", z, rows);
    check_ptr(fn, "lse", lse, rows);
    check_ptr(fn, "dlogits", d, rows);
    check_common(fn, rows, V, t, ig);
    const detail::Isa isa = detail::active_isa();
    detail::parallel_chunks(rows, grain_rows(V), [&](int64_t r0, int64_t r1) {
#if PYGPT_HAVE_X86_VARIANTS
        if (isa == detail::Isa::Avx512) return backward_avx512(z, t, lse, rs, scale, d, r0, r1, V, ig);
        if (isa == detail::Isa::Avx2) return backward_avx2(z, t, lse, rs, scale, d, r0, r1, V, ig);
#endif
        (void)isa;
        backward_baseline(z, t, lse, rs, scale, d, r0, r1, V, ig);
    });
}

template <class T>
void fused_impl(T* z, const int64_t* t, T* loss, T* lse, T scale, int64_t rows, int64_t V, int64_t ig) {
    const char* fn = "cross_entropy_fused";
    check_ptr(fn, "logits", z, rows);
    check_ptr(fn, "loss", loss, rows);
    check_ptr(fn, "lse", lse, rows);
    check_common(fn, rows, V, t, ig);
    const detail::Isa isa = detail::active_isa();
    detail::parallel_chunks(rows, grain_rows(V), [&](int64_t r0, int64_t r1) {
#if PYGPT_HAVE_X86_VARIANTS
        if (isa == detail::Isa::Avx512) return fused_avx512(z, t, loss, lse, scale, r0, r1, V, ig);
        if (isa == detail::Isa::Avx2) return fused_avx2(z, t, loss, lse, scale, r0, r1, V, ig);
#endif
        (void)isa;
        fused_baseline(z, t, loss, lse, scale, r0, r1, V, ig);
    });
}

}  // namespace

void cross_entropy_fused(float* logits, const int64_t* targets, float* loss, float* lse, float scale, int64_t rows,
                         int64_t V, int64_t ignore_index) {
    fused_impl(logits, targets, loss, lse, scale, rows, V, ignore_index);
}
void cross_entropy_fused(double* logits, const int64_t* targets, double* loss, double* lse, double scale,
                         int64_t rows, int64_t V, int64_t ignore_index) {
    fused_impl(logits, targets, loss, lse, scale, rows, V, ignore_index);
}

void cross_entropy_forward(const float* logits, const int64_t* targets, float* loss, float* lse, int64_t rows,
                           int64_t V, int64_t ignore_index) {
    forward_impl(logits, targets, loss, lse, rows, V, ignore_index);
}
void cross_entropy_forward(const double* logits, const int64_t* targets, double* loss, double* lse, int64_t rows,
                           int64_t V, int64_t ignore_index) {
    forward_impl(logits, targets, loss, lse, rows, V, ignore_index);
}
void cross_entropy_backward(const float* logits, const int64_t* targets, const float* lse, const float* row_scale,
                            float scale, float* dlogits, int64_t rows, int64_t V, int64_t ignore_index) {
    backward_impl(logits, targets, lse, row_scale, scale, dlogits, rows, V, ignore_index);
}
void cross_entropy_backward(const double* logits, const int64_t* targets, const double* lse, const double* row_scale,
                            double scale, double* dlogits, int64_t rows, int64_t V, int64_t ignore_index) {
    backward_impl(logits, targets, lse, row_scale, scale, dlogits, rows, V, ignore_index);
}

}  // namespace pygpt
