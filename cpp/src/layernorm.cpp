// LayerNorm forward/backward on the CPU. Formulas in pygpt/layernorm.h.
//
// One row (C values) per step of a thread; in-row sums use a fixed number of independent lanes so GCC
// vectorises them without -ffast-math and every ISA variant adds in the same order. The backward's
// column sums (dw, db) go through per-chunk partial sums in double; the chunks are fixed row ranges
// that depend only on rows, and the partials are added in chunk order, so the result does not depend
// on the thread count. The forward saves (mean, rstd) per row instead of x̂: the backward recomputes
// x̂ = (x − mean) rstd from x, which it reads anyway.
#include "pygpt/layernorm.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu_dispatch.h"
#include "parallel_for.h"

namespace pygpt {
namespace {

constexpr int64_t kGrain = int64_t(1) << 14;  // elements per parallel task, at least (whole rows)
constexpr int64_t kMaxChunks = 64;            // backward: at most this many row chunks (partial sums)
constexpr int64_t kMinChunk = int64_t(1) << 12;  // backward: elements per chunk, at least (whole rows)
constexpr int64_t kBlock = 512;               // backward: row elements buffered on the stack per block

/// ceil(a / b) for a >= 0, b > 0; at least 1 (the row counts above: whole rows, at least so many elements)
inline int64_t ceil_div(int64_t a, int64_t b) { return std::max<int64_t>(1, a / b + (a % b != 0)); }

template <class T>
struct Lanes {
    static constexpr int W = sizeof(T) == 4 ? 16 : 8;
};

template <class T>
PYGPT_ALWAYS_INLINE T lane_sum(T* a) {
    for (int w = Lanes<T>::W / 2; w > 0; w /= 2)
        for (int j = 0; j < w; ++j) a[j] += a[j + w];
    return a[0];
}

template <class T>
PYGPT_ALWAYS_INLINE T row_sum(const T* x, int64_t C) {
    constexpr int W = Lanes<T>::W;
    T acc[W] = {};
    int64_t i = 0;
    for (; i + W <= C; i += W)
        for (int j = 0; j < W; ++j) acc[j] += x[i + j];
    for (int j = 0; i + j < C; ++j) acc[j] += x[i + j];
    return lane_sum(acc);
}

/// Σ (x − mu)².
template <class T>
PYGPT_ALWAYS_INLINE T row_sum_sq_dev(const T* x, int64_t C, T mu) {
    constexpr int W = Lanes<T>::W;
    T acc[W] = {};
    int64_t i = 0;
    for (; i + W <= C; i += W)
        for (int j = 0; j < W; ++j) {
            const T d = x[i + j] - mu;
            acc[j] += d * d;
        }
    for (int j = 0; i + j < C; ++j) {
        const T d = x[i + j] - mu;
        acc[j] += d * d;
    }
    return lane_sum(acc);
}

template <class T>
PYGPT_ALWAYS_INLINE void forward_rows(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t r0,
                                      int64_t r1, int64_t C, T eps) {
    for (int64_t r = r0; r < r1; ++r) {
        const T* xr = x + r * C;
        T* __restrict yr = y + r * C;
        const T mu = row_sum(xr, C) / T(C);
        const T var = row_sum_sq_dev(xr, C, mu) / T(C);
        const T rs = T(1) / std::sqrt(var + eps);
        mean[r] = mu;
        rstd[r] = rs;
        for (int64_t j = 0; j < C; ++j) yr[j] = ((xr[j] - mu) * rs) * w[j] + b[j];
    }
}

/// Rows [r0, r1): dx (if any) and, if pw/pb, this chunk's column sums of dy x̂ and dy (in double).
template <class T>
PYGPT_ALWAYS_INLINE void backward_rows(const T* x, const T* w, const T* mean, const T* rstd, const T* dy, T* dx,
                                       double* pw, double* pb, int64_t r0, int64_t r1, int64_t C) {
    if (pw != nullptr) std::fill(pw, pw + C, 0.0);
    if (pb != nullptr) std::fill(pb, pb + C, 0.0);
    for (int64_t r = r0; r < r1; ++r) {
        const T* __restrict xr = x + r * C;
        const T* __restrict gr = dy + r * C;
        const T mu = mean[r], rs = rstd[r];
        if (dx != nullptr) {
            // Σ h and Σ h x̂ with h = dy w: element-wise into block buffers, then lane sums (written as
            // one loop with two lane accumulators, GCC vectorises across rows with shuffles: 10x slower)
            T sa = T(0), sc = T(0);
            for (int64_t b0 = 0; b0 < C; b0 += kBlock) {
                const int64_t n = std::min(kBlock, C - b0);
                alignas(64) T hb[kBlock], hxb[kBlock];
                for (int64_t k = 0; k < n; ++k) {
                    const T h = gr[b0 + k] * w[b0 + k];
                    hb[k] = h;
                    hxb[k] = h * ((xr[b0 + k] - mu) * rs);
                }
                sa += row_sum(hb, n);
                sc += row_sum(hxb, n);
            }
            const T mh = sa / T(C);
            const T mhx = sc / T(C);
            T* __restrict dxr = dx + r * C;
            if (pw != nullptr && pb != nullptr) {  // the usual case: everything in one pass over the row
                for (int64_t j = 0; j < C; ++j) {
                    const T h = gr[j] * w[j];
                    const T xh = (xr[j] - mu) * rs;
                    dxr[j] = rs * ((h - mh) - xh * mhx);
                    pw[j] += double(gr[j] * xh);
                    pb[j] += double(gr[j]);
                }
                continue;
            }
            for (int64_t j = 0; j < C; ++j) {
                const T h = gr[j] * w[j];
                const T xh = (xr[j] - mu) * rs;
                dxr[j] = rs * ((h - mh) - xh * mhx);
            }
        }
        if (pw != nullptr)
            for (int64_t j = 0; j < C; ++j) pw[j] += double(gr[j] * ((xr[j] - mu) * rs));
        if (pb != nullptr)
            for (int64_t j = 0; j < C; ++j) pb[j] += double(gr[j]);
    }
}

#define PYGPT_LN_LOOPS(ISA, ATTR)                                                                            \
    template <class T>                                                                                       \
    ATTR void forward_##ISA(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t r0, int64_t r1, \
                            int64_t C, T eps) {                                                              \
        forward_rows(x, w, b, y, mean, rstd, r0, r1, C, eps);                                                \
    }                                                                                                        \
    template <class T>                                                                                       \
    ATTR void backward_##ISA(const T* x, const T* w, const T* mean, const T* rstd, const T* dy, T* dx,         \
                             double* pw, double* pb, int64_t r0, int64_t r1, int64_t C) {                    \
        backward_rows(x, w, mean, rstd, dy, dx, pw, pb, r0, r1, C);                                          \
    }

PYGPT_LN_LOOPS(baseline, )
#if PYGPT_HAVE_X86_VARIANTS
PYGPT_LN_LOOPS(avx2, PYGPT_TARGET_AVX2)
PYGPT_LN_LOOPS(avx512, PYGPT_TARGET_AVX512)
#endif

void check_sizes(const char* fn, int64_t rows, int64_t C) {
    if (rows < 0) throw std::invalid_argument(std::string(fn) + ": rows must be >= 0, got " + std::to_string(rows));
    if (C < 1) throw std::invalid_argument(std::string(fn) + ": C must be >= 1, got " + std::to_string(C));
}

void check_ptr(const char* fn, const char* name, const void* p, bool needed) {
    if (needed && p == nullptr) throw std::invalid_argument(std::string(fn) + ": " + name + " is null");
}

template <class T>
void forward_impl(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t rows, int64_t C, double eps) {
    const char* fn = "layernorm_forward";
    check_sizes(fn, rows, C);
    if (!(eps >= 0.0)) throw std::invalid_argument(std::string(fn) + ": eps must be >= 0, got " + std::to_string(eps));
    check_ptr(fn, "w", w, true);
    check_ptr(fn, "b", b, true);
    for (auto [name, p] : {std::pair<const char*, const void*>{"x", x}, {"y", y}, {"mean", mean}, {"rstd", rstd}})
        check_ptr(fn, name, p, rows > 0);
    const T teps = T(eps);
    const detail::Isa isa = detail::active_isa();
    detail::parallel_chunks(rows, ceil_div(kGrain, C), [&](int64_t r0, int64_t r1) {
#if PYGPT_HAVE_X86_VARIANTS
        if (isa == detail::Isa::Avx512) return forward_avx512(x, w, b, y, mean, rstd, r0, r1, C, teps);
        if (isa == detail::Isa::Avx2) return forward_avx2(x, w, b, y, mean, rstd, r0, r1, C, teps);
#endif
        (void)isa;
        forward_baseline(x, w, b, y, mean, rstd, r0, r1, C, teps);
    });
}

template <class T>
void backward_impl(const T* x, const T* w, const T* mean, const T* rstd, const T* dy, T* dx, T* dw, T* db,
                   int64_t rows, int64_t C) {
    const char* fn = "layernorm_backward";
    check_sizes(fn, rows, C);
    check_ptr(fn, "w", w, dx != nullptr);
    for (auto [name, p] : {std::pair<const char*, const void*>{"x", x}, {"mean", mean}, {"rstd", rstd}, {"dy", dy}})
        check_ptr(fn, name, p, rows > 0);
    // Chunks of whole rows, each with its own double column sums (2 C), added in chunk order at the
    // end: at most kMaxChunks of them, and no smaller than kMinChunk elements (one-row chunks made a
    // 64 x 256 call spend more time on its 64 partial rows than on the rows themselves).
    const int64_t chunk = std::max({int64_t(1), ceil_div(rows, kMaxChunks), ceil_div(kMinChunk, C)});
    const int64_t nchunks = rows > 0 ? ceil_div(rows, chunk) : 0;
    const bool want_w = dw != nullptr, want_b = db != nullptr;
    // partials: per chunk [pw (C) | pb (C)], grown and reused per calling thread (no page faults per call)
    static thread_local std::vector<double> partials;
    if (want_w || want_b) {
        const size_t need = size_t(nchunks) * size_t(2 * C);
        if (partials.size() < need) partials.resize(need);
    }
    double* part = partials.data();
    const detail::Isa isa = detail::active_isa();
    // A task takes whole chunks, at least kGrain elements' worth, so a small call (16 rows of 256) runs
    // on the calling thread instead of paying the pool's wake-up (~100 us) for ~30 us of work. Each
    // task walks its range chunk by chunk so every chunk fills its own partials: the bits depend on the
    // chunks only, never on how they are grouped into tasks or on the thread count.
    const int64_t task_rows = chunk * ceil_div(kGrain, chunk * C);
    detail::parallel_chunks(rows, task_rows, [&](int64_t r0, int64_t r1) {
        for (int64_t a = r0; a < r1; a += chunk) {
            const int64_t c = a / chunk, e = std::min(r1, a + chunk);
            double* pw = want_w ? part + c * 2 * C : nullptr;
            double* pb = want_b ? part + c * 2 * C + C : nullptr;
#if PYGPT_HAVE_X86_VARIANTS
            if (isa == detail::Isa::Avx512) {
                backward_avx512(x, w, mean, rstd, dy, dx, pw, pb, a, e, C);
                continue;
            }
            if (isa == detail::Isa::Avx2) {
                backward_avx2(x, w, mean, rstd, dy, dx, pw, pb, a, e, C);
                continue;
            }
#endif
            (void)isa;
            backward_baseline(x, w, mean, rstd, dy, dx, pw, pb, a, e, C);
        }
    });
    if (!want_w && !want_b) return;
    for (int64_t j = 0; j < C; ++j) {
        double sw = 0.0, sb = 0.0;
        for (int64_t c = 0; c < nchunks; ++c) {
            sw += part[c * 2 * C + j];
            sb += part[c * 2 * C + C + j];
        }
        if (want_w) dw[j] = T(sw);
        if (want_b) db[j] = T(sb);
    }
}

}  // namespace

void layernorm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                       int64_t rows, int64_t C, double eps) {
    forward_impl(x, w, b, y, mean, rstd, rows, C, eps);
}
void layernorm_forward(const double* x, const double* w, const double* b, double* y, double* mean, double* rstd,
                       int64_t rows, int64_t C, double eps) {
    forward_impl(x, w, b, y, mean, rstd, rows, C, eps);
}
void layernorm_backward(const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                        float* dx, float* dw, float* db, int64_t rows, int64_t C) {
    backward_impl(x, w, mean, rstd, dy, dx, dw, db, rows, C);
}
void layernorm_backward(const double* x, const double* w, const double* mean, const double* rstd, const double* dy,
                        double* dx, double* dw, double* db, int64_t rows, int64_t C) {
    backward_impl(x, w, mean, rstd, dy, dx, dw, db, rows, C);
}

}  // namespace pygpt
