// Element-wise kernels on the GPU: dropout (pygpt/dropout.h) and the Adam/AdamW step (pygpt/adamw.h).
// Both are bit-identical to the CPU kernels: the same integer hash for the dropout mask and the
// same product x * (keep ? scale : 0); the Adam step with the same correctly rounded operations in
// the same order, written with the __f*_rn / __d*_rn intrinsics, which nvcc never contracts into
// FMAs. Grid-stride loops, 16-byte vectors for dropout when the pointers allow.
#include "common.cuh"

namespace pygpt {
namespace PYGPT_CUDA_NAMESPACE {
namespace {

using detail::fail_arg;

// ------------------------------------------------------------------------------------------ dropout
template <class T>
__device__ __forceinline__ T drop1(T x, uint64_t base, uint64_t idx, uint64_t threshold, T scale) {
    const uint64_t u = detail::mix64(base + idx * detail::kGolden);
    return x * ((u >> 32) >= threshold ? scale : T(0));
}

/// y[i] = x[i] * (keep(offset + i + 1) ? scale : 0); float4 (or double2) for the first nvec16 vectors.
template <class T>
__global__ void __launch_bounds__(256) dropout_kernel(const T* x, T* y, int64_t n, int64_t nvec16, uint64_t base,
                                                      uint64_t idx0, uint64_t threshold, T scale) {
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    const int64_t t0 = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if constexpr (sizeof(T) == 4) {
        for (int64_t i = t0; i < nvec16; i += stride) {
            const float4 a = reinterpret_cast<const float4*>(x)[i];
            const uint64_t j = idx0 + uint64_t(4 * i);
            reinterpret_cast<float4*>(y)[i] =
                make_float4(drop1(a.x, base, j, threshold, scale), drop1(a.y, base, j + 1, threshold, scale),
                            drop1(a.z, base, j + 2, threshold, scale), drop1(a.w, base, j + 3, threshold, scale));
        }
        for (int64_t i = 4 * nvec16 + t0; i < n; i += stride) y[i] = drop1(x[i], base, idx0 + uint64_t(i), threshold, scale);
    } else {
        for (int64_t i = t0; i < nvec16; i += stride) {
            const double2 a = reinterpret_cast<const double2*>(x)[i];
            const uint64_t j = idx0 + uint64_t(2 * i);
            reinterpret_cast<double2*>(y)[i] =
                make_double2(drop1(a.x, base, j, threshold, scale), drop1(a.y, base, j + 1, threshold, scale));
        }
        for (int64_t i = 2 * nvec16 + t0; i < n; i += stride) y[i] = drop1(x[i], base, idx0 + uint64_t(i), threshold, scale);
    }
}

template <class T>
void dropout_impl(const T* x, T* y, int64_t n, uint64_t key, uint64_t threshold, T scale, uint64_t offset,
                  Stream stream) {
    const char* fn = "pygpt::cuda::dropout_apply";
    if (n < 0) fail_arg(fn, "n must be >= 0, got " + std::to_string(n));
    if (threshold > (uint64_t(1) << 32)) fail_arg(fn, "threshold must be <= 2^32, got " + std::to_string(threshold));
    if (n == 0) return;
    if (x == nullptr || y == nullptr) fail_arg(fn, "x and y must not be null with n > 0");
    constexpr int N = 16 / sizeof(T);
    const int64_t nvec = detail::aligned16(x) && detail::aligned16(y) ? n / N : 0;
    detail::launch(dropout_kernel<T>, dim3(detail::grid_for(nvec + (n - nvec * N), 256 * 4)), dim3(256), 0, stream,
                   fn, x, y, n, nvec, detail::host_mix64(key), offset + 1, threshold, scale);
}

// ------------------------------------------------------------------------------------------ Adam
template <class T>
struct Rn;
template <>
struct Rn<float> {
    static __device__ __forceinline__ float mul(float a, float b) { return __fmul_rn(a, b); }
    static __device__ __forceinline__ float add(float a, float b) { return __fadd_rn(a, b); }
    static __device__ __forceinline__ float sub(float a, float b) { return __fsub_rn(a, b); }
    static __device__ __forceinline__ float div(float a, float b) { return __fdiv_rn(a, b); }
    static __device__ __forceinline__ float sqrt(float a) { return __fsqrt_rn(a); }
};
template <>
struct Rn<double> {
    static __device__ __forceinline__ double mul(double a, double b) { return __dmul_rn(a, b); }
    static __device__ __forceinline__ double add(double a, double b) { return __dadd_rn(a, b); }
    static __device__ __forceinline__ double sub(double a, double b) { return __dsub_rn(a, b); }
    static __device__ __forceinline__ double div(double a, double b) { return __ddiv_rn(a, b); }
    static __device__ __forceinline__ double sqrt(double a) { return __dsqrt_rn(a); }
};

template <class T>
struct AdamCoef {
    T decay, l2, omb1, b2, omb2, bc2, eps, step_size;
    bool use_decay, use_l2;
};

template <class T>
__global__ void __launch_bounds__(256) adam_kernel(T* p, const T* g, T* m, T* v, int64_t n, AdamCoef<T> c) {
    using R = Rn<T>;
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
        T pp = p[i];
        if (c.use_decay) pp = R::mul(pp, c.decay);
        T gg = g[i];
        if (c.use_l2) gg = R::add(gg, R::mul(pp, c.l2));
        const T m0 = m[i];
        const T mm = R::add(m0, R::mul(R::sub(gg, m0), c.omb1));
        const T vv = R::add(R::mul(v[i], c.b2), R::mul(R::mul(gg, c.omb2), gg));
        const T den = R::add(R::div(R::sqrt(vv), c.bc2), c.eps);
        p[i] = R::sub(pp, R::div(R::mul(mm, c.step_size), den));
        m[i] = mm;
        v[i] = vv;
    }
}

template <class T>
void adam_impl(T* p, const T* g, T* m, T* v, int64_t n, const AdamStep& s, Stream stream) {
    const char* fn = "pygpt::cuda::adam_update";
    if (n < 0) fail_arg(fn, "n must be >= 0, got " + std::to_string(n));
    if (n == 0) return;
    if (p == nullptr || g == nullptr || m == nullptr || v == nullptr)
        fail_arg(fn, "p, g, m and v must not be null with n > 0");
    const AdamCoef<T> c{T(s.decay), T(s.l2), T(s.one_minus_beta1), T(s.beta2), T(s.one_minus_beta2),
                        T(s.bias_correction2_sqrt), T(s.eps), T(s.step_size), s.decay != 1.0, s.l2 != 0.0};
    detail::launch(adam_kernel<T>, dim3(detail::grid_for(n, 256 * 4)), dim3(256), 0, stream, fn, p, g, m, v, n, c);
}

}  // namespace

void dropout_apply(const float* x, float* y, int64_t n, uint64_t key, uint64_t threshold, float scale,
                   uint64_t offset, Stream stream) {
    dropout_impl(x, y, n, key, threshold, scale, offset, stream);
}
void dropout_apply(const double* x, double* y, int64_t n, uint64_t key, uint64_t threshold, double scale,
                   uint64_t offset, Stream stream) {
    dropout_impl(x, y, n, key, threshold, scale, offset, stream);
}
void adam_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamStep& step, Stream stream) {
    adam_impl(p, g, m, v, n, step, stream);
}
void adam_update(double* p, const double* g, double* m, double* v, int64_t n, const AdamStep& step,
                 Stream stream) {
    adam_impl(p, g, m, v, n, step, stream);
}

}  // namespace PYGPT_CUDA_NAMESPACE
}  // namespace pygpt
