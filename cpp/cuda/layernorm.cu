// LayerNorm forward/backward on the GPU. Formulas in pygpt/layernorm.h (the same as the CPU kernel).
//
// Forward and dx: one warp per row (8 rows per 256-thread block), the lanes striding over the C
// columns (coalesced); two passes over the row for mean and variance (the second from L1/L2),
// sums closed by a shuffle tree in T. The forward saves mean and rstd per row.
// dw, db: column sums over rows, deterministic without atomics: the rows are cut into `splits` fixed
// ranges (a function of rows and C only); block (column tile of 32, split) has 32 x 8 threads, each
// summing every 8th row of the range in double; the 8 partial sums are added in shared memory in a
// fixed order and written to the workspace; a second kernel adds the splits in order and rounds to T.
#include "common.cuh"

namespace pygpt {
namespace PYGPT_CUDA_NAMESPACE {
namespace {

using detail::fail_arg;

constexpr int kRowsPerBlock = 8;  // warps per block in the row kernels
constexpr int kColTile = 32;      // dw/db: columns per block
constexpr int kRowThreads = 8;    // dw/db: threads over rows per block

template <class T>
__global__ void __launch_bounds__(256) ln_forward_kernel(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd,
                                                         int64_t rows, int64_t C, T eps) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    for (int64_t r = int64_t(blockIdx.x) * kRowsPerBlock + warp; r < rows; r += int64_t(gridDim.x) * kRowsPerBlock) {
        const T* xr = x + r * C;
        T s = T(0);
        for (int64_t j = lane; j < C; j += 32) s += xr[j];
        const T mu = detail::warp_sum(s) / T(C);
        T v = T(0);
        for (int64_t j = lane; j < C; j += 32) {
            const T d = xr[j] - mu;
            v += d * d;
        }
        const T var = detail::warp_sum(v) / T(C);
        const T rs = T(1) / sqrt(var + eps);
        T* yr = y + r * C;
        for (int64_t j = lane; j < C; j += 32) yr[j] = ((xr[j] - mu) * rs) * w[j] + b[j];
        if (lane == 0) {
            mean[r] = mu;
            rstd[r] = rs;
        }
    }
}

template <class T>
__global__ void __launch_bounds__(256) ln_backward_dx_kernel(const T* x, const T* w, const T* mean, const T* rstd,
                                                             const T* dy, T* dx, int64_t rows, int64_t C) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    for (int64_t r = int64_t(blockIdx.x) * kRowsPerBlock + warp; r < rows; r += int64_t(gridDim.x) * kRowsPerBlock) {
        const T* xr = x + r * C;
        const T* gr = dy + r * C;
        const T mu = mean[r], rs = rstd[r];
        T sa = T(0), sc = T(0);
        for (int64_t j = lane; j < C; j += 32) {
            const T h = gr[j] * w[j];
            sa += h;
            sc += h * ((xr[j] - mu) * rs);
        }
        const T mh = detail::warp_sum(sa) / T(C);
        const T mhx = detail::warp_sum(sc) / T(C);
        T* dxr = dx + r * C;
        for (int64_t j = lane; j < C; j += 32) {
            const T h = gr[j] * w[j];
            const T xh = (xr[j] - mu) * rs;
            dxr[j] = rs * ((h - mh) - xh * mhx);
        }
    }
}

/// Partial column sums: part[0][split][j] = Σ dy x̂, part[1][split][j] = Σ dy over the split's rows.
template <class T>
__global__ void __launch_bounds__(256) ln_backward_dwdb_kernel(const T* x, const T* mean, const T* rstd, const T* dy,
                                                               double* part, int64_t rows, int64_t C,
                                                               int64_t rows_per_split, int64_t splits) {
    __shared__ double sw[kRowThreads][kColTile];
    __shared__ double sb[kRowThreads][kColTile];
    const int tx = threadIdx.x % kColTile, ty = threadIdx.x / kColTile;
    const int64_t j = int64_t(blockIdx.x) * kColTile + tx;
    const int64_t split = blockIdx.y;
    const int64_t r0 = split * rows_per_split;
    const int64_t r1 = r0 + rows_per_split < rows ? r0 + rows_per_split : rows;
    double aw = 0.0, ab = 0.0;
    if (j < C)
        for (int64_t r = r0 + ty; r < r1; r += kRowThreads) {
            const T g = dy[r * C + j];
            aw += double(g * ((x[r * C + j] - mean[r]) * rstd[r]));
            ab += double(g);
        }
    sw[ty][tx] = aw;
    sb[ty][tx] = ab;
    __syncthreads();
    if (ty == 0 && j < C) {
        double w = 0.0, b = 0.0;
        for (int k = 0; k < kRowThreads; ++k) {
            w += sw[k][tx];
            b += sb[k][tx];
        }
        part[split * C + j] = w;
        part[(splits + split) * C + j] = b;
    }
}

template <class T>
__global__ void __launch_bounds__(256) ln_backward_reduce_kernel(const double* part, T* dw, T* db, int64_t C,
                                                                 int64_t splits) {
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < C; j += stride) {
        double w = 0.0, b = 0.0;
        for (int64_t s = 0; s < splits; ++s) {
            w += part[s * C + j];
            b += part[(splits + s) * C + j];
        }
        if (dw != nullptr) dw[j] = T(w);
        if (db != nullptr) db[j] = T(b);
    }
}

struct Split {
    int64_t rows_per_split = 0, splits = 0;
};
/// Row ranges of the dw/db partial sums: about 1024 blocks in all, a function of (rows, C) only.
Split split_rows(int64_t rows, int64_t C) {
    Split s;
    if (rows <= 0) return s;
    const int64_t col_tiles = (C + kColTile - 1) / kColTile;
    int64_t want = 1024 / col_tiles;
    want = want < 1 ? 1 : (want > 256 ? 256 : want);
    const int64_t min_rows = 4 * kRowThreads;  // at least 4 rows per thread
    const int64_t most = (rows + min_rows - 1) / min_rows;
    if (want > most) want = most;
    s.rows_per_split = (rows + want - 1) / want;
    s.splits = (rows + s.rows_per_split - 1) / s.rows_per_split;
    return s;
}

void check_sizes(const char* fn, int64_t rows, int64_t C) {
    if (rows < 0) fail_arg(fn, "rows must be >= 0, got " + std::to_string(rows));
    if (C < 1) fail_arg(fn, "C must be >= 1, got " + std::to_string(C));
    if (rows > 0 && C > INT64_MAX / rows) fail_arg(fn, "rows * C overflows int64");
}

void check_ptr(const char* fn, const char* name, const void* p, bool needed) {
    if (needed && p == nullptr) fail_arg(fn, std::string(name) + " is null");
}

unsigned row_grid(int64_t rows) {
    const int64_t b = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
    return unsigned(b < 1 ? 1 : (b > 65536 ? 65536 : b));
}

template <class T>
void forward_impl(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t rows, int64_t C, double eps,
                  Stream stream) {
    const char* fn = "pygpt::cuda::layernorm_forward";
    check_sizes(fn, rows, C);
    if (!(eps >= 0.0)) fail_arg(fn, "eps must be >= 0, got " + std::to_string(eps));
    check_ptr(fn, "w", w, true);
    check_ptr(fn, "b", b, true);
    check_ptr(fn, "x", x, rows > 0);
    check_ptr(fn, "y", y, rows > 0);
    check_ptr(fn, "mean", mean, rows > 0);
    check_ptr(fn, "rstd", rstd, rows > 0);
    if (rows == 0) return;
    detail::launch(ln_forward_kernel<T>, dim3(row_grid(rows)), dim3(32 * kRowsPerBlock), 0, stream, fn, x, w, b, y,
                   mean, rstd, rows, C, T(eps));
}

template <class T>
void backward_impl(const T* x, const T* w, const T* mean, const T* rstd, const T* dy, T* dx, T* dw, T* db,
                   int64_t rows, int64_t C, void* workspace, size_t workspace_bytes, Stream stream) {
    const char* fn = "pygpt::cuda::layernorm_backward";
    check_sizes(fn, rows, C);
    check_ptr(fn, "w", w, dx != nullptr);
    check_ptr(fn, "x", x, rows > 0);
    check_ptr(fn, "mean", mean, rows > 0);
    check_ptr(fn, "rstd", rstd, rows > 0);
    check_ptr(fn, "dy", dy, rows > 0);
    const bool sums = dw != nullptr || db != nullptr;
    const Split sp = split_rows(rows, C);
    if (sums) {
        const size_t need = layernorm_backward_workspace_size(rows, C);
        if (workspace_bytes < need)
            fail_arg(fn, "workspace has " + std::to_string(workspace_bytes) + " bytes, needs " + std::to_string(need) +
                             " (layernorm_backward_workspace_size)");
        check_ptr(fn, "workspace", workspace, need > 0);
        if (need > 0 && (reinterpret_cast<uintptr_t>(workspace) & 7u) != 0)
            fail_arg(fn, "workspace must be 8-byte aligned");
    }
    if (dx != nullptr && rows > 0)
        detail::launch(ln_backward_dx_kernel<T>, dim3(row_grid(rows)), dim3(32 * kRowsPerBlock), 0, stream, fn, x, w,
                       mean, rstd, dy, dx, rows, C);
    if (!sums) return;
    double* part = static_cast<double*>(workspace);
    if (sp.splits > 0) {
        const int64_t col_tiles = (C + kColTile - 1) / kColTile;
        if (col_tiles > int64_t(INT32_MAX)) fail_arg(fn, "C is too large");
        detail::launch(ln_backward_dwdb_kernel<T>, dim3(unsigned(col_tiles), unsigned(sp.splits)),
                       dim3(kColTile * kRowThreads), 0, stream, fn, x, mean, rstd, dy, part, rows, C,
                       sp.rows_per_split, sp.splits);
    }
    detail::launch(ln_backward_reduce_kernel<T>, dim3(detail::grid_for(C, 256)), dim3(256), 0, stream, fn, part, dw,
                   db, C, sp.splits);
}

}  // namespace

size_t layernorm_backward_workspace_size(int64_t rows, int64_t C) {
    if (rows <= 0 || C < 1) return 0;
    const Split sp = split_rows(rows, C);
    return size_t(2) * size_t(sp.splits) * size_t(C) * sizeof(double);
}

void layernorm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                       int64_t rows, int64_t C, double eps, Stream stream) {
    forward_impl(x, w, b, y, mean, rstd, rows, C, eps, stream);
}
void layernorm_forward(const double* x, const double* w, const double* b, double* y, double* mean, double* rstd,
                       int64_t rows, int64_t C, double eps, Stream stream) {
    forward_impl(x, w, b, y, mean, rstd, rows, C, eps, stream);
}
void layernorm_backward(const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                        float* dx, float* dw, float* db, int64_t rows, int64_t C, void* workspace,
                        size_t workspace_bytes, Stream stream) {
    backward_impl(x, w, mean, rstd, dy, dx, dw, db, rows, C, workspace, workspace_bytes, stream);
}
void layernorm_backward(const double* x, const double* w, const double* mean, const double* rstd,
                        const double* dy, double* dx, double* dw, double* db, int64_t rows, int64_t C,
                        void* workspace, size_t workspace_bytes, Stream stream) {
    backward_impl(x, w, mean, rstd, dy, dx, dw, db, rows, C, workspace, workspace_bytes, stream);
}

}  // namespace PYGPT_CUDA_NAMESPACE
}  // namespace pygpt
