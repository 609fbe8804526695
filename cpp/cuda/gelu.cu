// GELU forward/backward on the GPU. Formulas and special values as the CPU kernel (cpp/src/gelu.cpp,
// pygpt/gelu.h): both forms are evaluated in |x| clamped (30 for tanh, 40 for erf; beyond it the
// results are the exact limits), the sign applied at the end, so nothing cancels, nothing
// overflows, and +-inf never meets inf * 0.
//   tanh:  with a = |x|, m = exp(-2k a (1 + c a^2)), r = 1/(1 + m):
//          f = x r (x >= 0) or -a m r;   f' = r + w or m r - w,  w = 2k a (1 + 3c a^2) m r^2
//   erf:   q = erfc(a/sqrt 2)/2, p = exp(-a^2/2)/sqrt(2 pi):
//          f = x (1 - q) or -a q;         f' = (1 - q) + a p  or  q - a p
// Accurate expf/erfcf (never the __expf intrinsics, never fast-math: the backward is a difference
// of nearly equal terms near x = -1.5).
//
// Memory-bound: 16-byte vector loads and stores (float4 / double2) when every pointer is 16-byte
// aligned, a scalar loop for the tail (n not a multiple of the vector) and for unaligned views.
#include "common.cuh"

namespace pygpt {
namespace PYGPT_CUDA_NAMESPACE {
namespace {

using detail::fail_arg;

template <class T>
struct G;
template <>
struct G<float> {
    static __device__ __forceinline__ float ex(float x) { return expf(x); }
    static __device__ __forceinline__ float erfc_(float x) { return erfcf(x); }
    static __device__ __forceinline__ float abs_(float x) { return fabsf(x); }
};
template <>
struct G<double> {
    static __device__ __forceinline__ double ex(double x) { return exp(x); }
    static __device__ __forceinline__ double erfc_(double x) { return erfc(x); }
    static __device__ __forceinline__ double abs_(double x) { return fabs(x); }
};

template <class T>
__device__ __forceinline__ T tanh_fwd(T x) {
    const T k = T(0.7978845608028654), c = T(0.044715);
    const T ax = G<T>::abs_(x);
    const T a = ax > T(30) ? T(30) : ax;  // NaN passes through
    const T m = G<T>::ex(T(-2) * k * (a * (T(1) + c * a * a)));
    const T r = T(1) / (T(1) + m);
    return x >= T(0) ? x * r : -(a * (m * r));
}
template <class T>
__device__ __forceinline__ T tanh_bwd(T x, T dy) {
    const T k = T(0.7978845608028654), c = T(0.044715);
    const T ax = G<T>::abs_(x);
    const T a = ax > T(30) ? T(30) : ax;
    const T a2 = a * a;
    const T m = G<T>::ex(T(-2) * k * (a * (T(1) + c * a2)));
    const T r = T(1) / (T(1) + m);
    const T mr = m * r;
    const T w = T(2) * k * a * (T(1) + T(3) * c * a2) * (mr * r);
    return dy * (x >= T(0) ? r + w : mr - w);
}
template <class T>
__device__ __forceinline__ void normal_tail(T a, T& q, T& p) {
    q = T(0.5) * G<T>::erfc_(a * T(0.7071067811865476));
    p = T(0.3989422804014327) * G<T>::ex(T(-0.5) * a * a);
}
template <class T>
__device__ __forceinline__ T erf_fwd(T x) {
    const T ax = G<T>::abs_(x);
    const T a = ax > T(40) ? T(40) : ax;
    T q, p;
    normal_tail(a, q, p);
    return x >= T(0) ? x * (T(1) - q) : -(a * q);
}
template <class T>
__device__ __forceinline__ T erf_bwd(T x, T dy) {
    const T ax = G<T>::abs_(x);
    const T a = ax > T(40) ? T(40) : ax;
    T q, p;
    normal_tail(a, q, p);
    const T ap = a * p;
    return dy * (x >= T(0) ? (T(1) - q) + ap : q - ap);
}

enum Op { TanhFwd, TanhBwd, ErfFwd, ErfBwd };

template <class T, int OP>
__device__ __forceinline__ T apply(T x, T dy) {
    if (OP == TanhFwd) return tanh_fwd(x);
    if (OP == TanhBwd) return tanh_bwd(x, dy);
    if (OP == ErfFwd) return erf_fwd(x);
    return erf_bwd(x, dy);
}

// 16-byte vectors: 4 floats or 2 doubles
template <class T>
struct V16;
template <>
struct V16<float> {
    using type = float4;
    static constexpr int N = 4;
    static __device__ __forceinline__ void split(const float4& v, float* a) { a[0] = v.x, a[1] = v.y, a[2] = v.z, a[3] = v.w; }
    static __device__ __forceinline__ float4 join(const float* a) { return make_float4(a[0], a[1], a[2], a[3]); }
};
template <>
struct V16<double> {
    using type = double2;
    static constexpr int N = 2;
    static __device__ __forceinline__ void split(const double2& v, double* a) { a[0] = v.x, a[1] = v.y; }
    static __device__ __forceinline__ double2 join(const double* a) { return make_double2(a[0], a[1]); }
};

/// out[i] = op(x[i], dy[i]) (dy unused by the forward ops). nvec16 > 0: the first nvec16 16-byte
/// vectors go through vector loads; the rest (and everything when nvec16 == 0) element by element.
template <class T, int OP>
__global__ void __launch_bounds__(256) gelu_kernel(const T* x, const T* dy, T* out, int64_t n, int64_t nvec16) {
    using VT = V16<T>;
    constexpr int N = VT::N;
    constexpr bool bwd = OP == TanhBwd || OP == ErfBwd;
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    const int64_t t0 = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    for (int64_t i = t0; i < nvec16; i += stride) {
        T a[N], g[N], r[N];
        VT::split(reinterpret_cast<const typename VT::type*>(x)[i], a);
        if (bwd) VT::split(reinterpret_cast<const typename VT::type*>(dy)[i], g);
#pragma unroll
        for (int e = 0; e < N; ++e) r[e] = apply<T, OP>(a[e], bwd ? g[e] : T(0));
        reinterpret_cast<typename VT::type*>(out)[i] = VT::join(r);
    }
    for (int64_t i = nvec16 * N + t0; i < n; i += stride) out[i] = apply<T, OP>(x[i], bwd ? dy[i] : T(0));
}

template <class T, int OP>
void run(const char* fn, const T* x, const T* dy, T* out, int64_t n, Stream stream) {
    const bool vec = detail::aligned16(x) && detail::aligned16(out) && (dy == nullptr || detail::aligned16(dy));
    const int64_t nvec = vec ? n / V16<T>::N : 0;
    const int64_t items = nvec + (n - nvec * V16<T>::N);
    detail::launch(gelu_kernel<T, OP>, dim3(detail::grid_for(items, 256 * 4)), dim3(256), 0, stream, fn, x, dy, out,
                   n, nvec);
}

template <class T>
void forward_impl(const T* x, T* y, int64_t n, GeluApprox approx, Stream stream) {
    const char* fn = "pygpt::cuda::gelu_forward";
    if (n < 0) fail_arg(fn, "n must be >= 0, got " + std::to_string(n));
    if (n == 0) return;
    if (x == nullptr || y == nullptr) fail_arg(fn, "x and y must not be null with n > 0");
    if (approx == GeluApprox::Tanh) run<T, TanhFwd>(fn, x, nullptr, y, n, stream);
    else run<T, ErfFwd>(fn, x, nullptr, y, n, stream);
}

template <class T>
void backward_impl(const T* x, const T* dy, T* dx, int64_t n, GeluApprox approx, Stream stream) {
    const char* fn = "pygpt::cuda::gelu_backward";
    if (n < 0) fail_arg(fn, "n must be >= 0, got " + std::to_string(n));
    if (n == 0) return;
    if (x == nullptr || dy == nullptr || dx == nullptr) fail_arg(fn, "x, dy and dx must not be null with n > 0");
    if (approx == GeluApprox::Tanh) run<T, TanhBwd>(fn, x, dy, dx, n, stream);
    else run<T, ErfBwd>(fn, x, dy, dx, n, stream);
}

}  // namespace

void gelu_forward(const float* x, float* y, int64_t n, GeluApprox approx, Stream stream) {
    forward_impl(x, y, n, approx, stream);
}
void gelu_forward(const double* x, double* y, int64_t n, GeluApprox approx, Stream stream) {
    forward_impl(x, y, n, approx, stream);
}
void gelu_backward(const float* x, const float* dy, float* dx, int64_t n, GeluApprox approx, Stream stream) {
    backward_impl(x, dy, dx, n, approx, stream);
}
void gelu_backward(const double* x, const double* dy, double* dx, int64_t n, GeluApprox approx, Stream stream) {
    backward_impl(x, dy, dx, n, approx, stream);
}

}  // namespace PYGPT_CUDA_NAMESPACE
}  // namespace pygpt
