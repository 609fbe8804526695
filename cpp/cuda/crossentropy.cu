// Softmax cross-entropy forward/backward on the GPU. Formulas in pygpt/crossentropy.h.
//
// One 256-thread block per row (grid-stride over rows). Forward: each thread keeps an online
// (running max m, Σ exp(z − m)) pair over its strided columns, so the logits are read once; the
// pairs are merged by a shuffle tree and across warps in shared memory in a fixed order. -inf
// logits contribute exactly 0, a NaN logit makes the row's sum (so lse and loss) NaN, as on the CPU.
// Backward: dz = exp(z − lse)·s, and (exp(z_t − lse) − 1)·s at the target, each element read and
// written by one thread (so it may run in place). Targets are read on the device only: a target that
// is neither ignore_index nor in [0, V) is never used as an index, its row gets NaN.
#include "common.cuh"

namespace pygpt {
namespace PYGPT_CUDA_NAMESPACE {
namespace {

using detail::fail_arg;

constexpr int kThreads = 256;

template <class T>
__device__ __forceinline__ T ex(T x);
template <>
__device__ __forceinline__ float ex<float>(float x) { return expf(x); }
template <>
__device__ __forceinline__ double ex<double>(double x) { return exp(x); }
template <class T>
__device__ __forceinline__ T lg(T x);
template <>
__device__ __forceinline__ float lg<float>(float x) { return logf(x); }
template <>
__device__ __forceinline__ double lg<double>(double x) { return log(x); }

template <class T>
__device__ __forceinline__ T neg_inf() { return -T(INFINITY); }

/// (m, s) ∪ (m2, s2): s scaled to the larger max. s == 0 (nothing yet, or only -inf) adds nothing.
template <class T>
__device__ __forceinline__ void merge(T& m, T& s, T m2, T s2) {
    if (s2 == T(0) && !(m2 != m2)) return;  // empty partner (a NaN max still propagates below)
    if (s == T(0) && !(m != m)) {
        m = m2;
        s = s2;
        return;
    }
    const T mn = m2 > m ? m2 : m;
    s = s * ex(m - mn) + s2 * ex(m2 - mn);
    m = mn;
}

template <class T>
__global__ void __launch_bounds__(kThreads) ce_forward_kernel(const T* logits, const int64_t* targets, T* loss, T* lse,
                                                              int64_t rows, int64_t V, int64_t ignore_index) {
    __shared__ T sm[kThreads / 32], ss[kThreads / 32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* z = logits + r * V;
        T m = neg_inf<T>(), s = T(0);
        for (int64_t j = threadIdx.x; j < V; j += kThreads) {
            const T v = z[j];
            if (v > m) {
                s = s * ex(m - v) + T(1);  // m = -inf at first: exp(-inf) = 0
                m = v;
            } else if (v != neg_inf<T>()) {
                s += ex(v - m);  // NaN v: s becomes NaN
            }
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const T m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
            merge(m, s, m2, s2);
        }
        if (lane == 0) {
            sm[warp] = m;
            ss[warp] = s;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            T M = sm[0], S = ss[0];
            for (int w = 1; w < kThreads / 32; ++w) merge(M, S, sm[w], ss[w]);
            const T l = M + lg(S);  // all -inf: -inf + log 0 = -inf
            lse[r] = l;
            const int64_t t = targets[r];
            T out;
            if (t == ignore_index) out = T(0);
            else if (t < 0 || t >= V) out = T(NAN);
            else out = l - z[t];
            loss[r] = out;
        }
        __syncthreads();  // sm/ss are reused by the next row
    }
}

template <class T>
__global__ void __launch_bounds__(kThreads) ce_backward_kernel(const T* logits, const int64_t* targets, const T* lse,
                                                               const T* row_scale, T scale, T* dlogits, int64_t rows,
                                                               int64_t V, int64_t ignore_index) {
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* z = logits + r * V;
        T* d = dlogits + r * V;
        const int64_t t = targets[r];
        if (t == ignore_index) {
            for (int64_t j = threadIdx.x; j < V; j += kThreads) d[j] = T(0);
            continue;
        }
        const bool bad = t < 0 || t >= V;
        const T s = row_scale != nullptr ? scale * row_scale[r] : scale;
        const T l = lse[r];
        for (int64_t j = threadIdx.x; j < V; j += kThreads) {
            const T p = ex(T(z[j] - l));
            d[j] = bad ? T(NAN) : (j == t ? (p - T(1)) * s : p * s);
        }
    }
}

void check(const char* fn, int64_t rows, int64_t V, const void* logits, const int64_t* targets) {
    if (rows < 0) fail_arg(fn, "rows must be >= 0, got " + std::to_string(rows));
    if (rows > 0 && V < 1) fail_arg(fn, "V must be >= 1, got " + std::to_string(V));
    if (V < 0) fail_arg(fn, "V must be >= 0, got " + std::to_string(V));
    if (rows > 0 && V > INT64_MAX / rows) fail_arg(fn, "rows * V overflows int64");
    if (rows > 0 && targets == nullptr) fail_arg(fn, "targets is null with rows > 0");
    if (rows > 0 && logits == nullptr) fail_arg(fn, "logits is null with rows > 0");
}

unsigned row_blocks(int64_t rows) { return unsigned(rows > 65536 * 4 ? 65536 * 4 : rows); }

template <class T>
void forward_impl(const T* logits, const int64_t* targets, T* loss, T* lse, int64_t rows, int64_t V,
                  int64_t ignore_index, Stream stream) {
    const char* fn = "pygpt::cuda::cross_entropy_forward";
    check(fn, rows, V, logits, targets);
    if (rows == 0) return;
    if (loss == nullptr || lse == nullptr) fail_arg(fn, "loss and lse must not be null with rows > 0");
    detail::launch(ce_forward_kernel<T>, dim3(row_blocks(rows)), dim3(kThreads), 0, stream, fn, logits, targets, loss,
                   lse, rows, V, ignore_index);
}

template <class T>
void backward_impl(const T* logits, const int64_t* targets, const T* lse, const T* row_scale, T scale, T* dlogits,
                   int64_t rows, int64_t V, int64_t ignore_index, Stream stream) {
    const char* fn = "pygpt::cuda::cross_entropy_backward";
    check(fn, rows, V, logits, targets);
    if (rows == 0) return;
    if (lse == nullptr || dlogits == nullptr) fail_arg(fn, "lse and dlogits must not be null with rows > 0");
    detail::launch(ce_backward_kernel<T>, dim3(row_blocks(rows)), dim3(kThreads), 0, stream, fn, logits, targets, lse,
                   row_scale, scale, dlogits, rows, V, ignore_index);
}

}  // namespace

void cross_entropy_forward(const float* logits, const int64_t* targets, float* loss, float* lse, int64_t rows,
                           int64_t V, int64_t ignore_index, Stream stream) {
    forward_impl(logits, targets, loss, lse, rows, V, ignore_index, stream);
}
void cross_entropy_forward(const double* logits, const int64_t* targets, double* loss, double* lse, int64_t rows,
                           int64_t V, int64_t ignore_index, Stream stream) {
    forward_impl(logits, targets, loss, lse, rows, V, ignore_index, stream);
}
void cross_entropy_backward(const float* logits, const int64_t* targets, const float* lse, const float* row_scale,
                            float scale, float* dlogits, int64_t rows, int64_t V, int64_t ignore_index,
                            Stream stream) {
    backward_impl(logits, targets, lse, row_scale, scale, dlogits, rows, V, ignore_index, stream);
}
void cross_entropy_backward(const double* logits, const int64_t* targets, const double* lse,
                            const double* row_scale, double scale, double* dlogits, int64_t rows, int64_t V,
                            int64_t ignore_index, Stream stream) {
    backward_impl(logits, targets, lse, row_scale, scale, dlogits, rows, V, ignore_index, stream);
}

}  // namespace PYGPT_CUDA_NAMESPACE
}  // namespace pygpt
