// CUDA kernels: the CPU kernels' API (gelu.h, layernorm.h, crossentropy.h, attention.h, dropout.h,
// adamw.h) on device pointers, launched asynchronously on a CUDA stream. Same formulas, same
// masks and dropout bits (pygpt/random.py), same argument checks (std::invalid_argument before
// anything is launched); CUDA failures throw std::runtime_error naming the entry point and the
// CUDA error. Present only in builds with CUDA (PYGPT_WITH_CUDA, i.e. pygpt_WITH_CUDA in CMake).
//
// This header needs no CUDA headers: a stream is passed as `CUstream_st*`, which is what
// cudaStream_t (and CUstream) point to, so `cudaStream_t s; pygpt::cuda::gelu_forward(..., s)`
// works as is; nullptr is the legacy default stream. Pointers are device (or managed) memory of
// the current device; the kernels do not check that (bindings do, with check_device_buffer).
//
// Precision: float32 kernels accumulate in float32 (row statistics of LayerNorm's dw/db in double);
// attention is float32 only. Results are deterministic: no atomics, reductions in a fixed order
// that depends only on the shape.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "pygpt/adamw.h"      // AdamStep
#include "pygpt/attention.h"  // AttentionShape, AttentionStrides, AttentionOptions
#include "pygpt/gelu.h"       // GeluApprox

struct CUstream_st;  // cudaStream_t == CUstream_st*

#ifndef PYGPT_CUDA_NAMESPACE
#define PYGPT_CUDA_NAMESPACE cuda
#endif

namespace pygpt {
namespace PYGPT_CUDA_NAMESPACE {

using Stream = CUstream_st*;

/// What was compiled: kernel names, the architectures nvcc generated code for (e.g. "80,90"),
/// and the CUDA runtime version the library was built with (e.g. 13000).
struct Info {
    std::vector<std::string> kernels;
    std::string architectures;
    int runtime_version = 0;
};
Info info();

/// Number of usable CUDA devices; 0 when there is none or no driver (never throws).
int device_count();
/// Throws std::runtime_error("<who>: no CUDA device is usable here (<reason>)") unless a device is there.
void require_device(const char* who);
/// Throws std::invalid_argument unless [p, p + bytes) lies in one allocation of device (or managed)
/// memory on the current device. bytes == 0 checks nothing. Call require_device first.
void check_device_buffer(const void* p, size_t bytes, const char* who, const char* name);

// ---- GELU (gelu.h): n contiguous elements; forward may run in place (y == x).
void gelu_forward(const float* x, float* y, int64_t n, GeluApprox approx, Stream stream);
void gelu_forward(const double* x, double* y, int64_t n, GeluApprox approx, Stream stream);
void gelu_backward(const float* x, const float* dy, float* dx, int64_t n, GeluApprox approx, Stream stream);
void gelu_backward(const double* x, const double* dy, double* dx, int64_t n, GeluApprox approx, Stream stream);

// ---- LayerNorm (layernorm.h). The backward's dw/db are column sums over rows: per-block partial
// sums (double) go to `workspace` (layernorm_backward_workspace_size bytes, any alignment of 8),
// then a second kernel adds them in a fixed order. dx, dw, db may each be null.
void layernorm_forward(const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                       int64_t rows, int64_t C, double eps, Stream stream);
void layernorm_forward(const double* x, const double* w, const double* b, double* y, double* mean, double* rstd,
                       int64_t rows, int64_t C, double eps, Stream stream);
size_t layernorm_backward_workspace_size(int64_t rows, int64_t C);
void layernorm_backward(const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                        float* dx, float* dw, float* db, int64_t rows, int64_t C, void* workspace,
                        size_t workspace_bytes, Stream stream);
void layernorm_backward(const double* x, const double* w, const double* mean, const double* rstd,
                        const double* dy, double* dx, double* dw, double* db, int64_t rows, int64_t C,
                        void* workspace, size_t workspace_bytes, Stream stream);

// ---- softmax cross-entropy (crossentropy.h). Targets live on the device and are not checked
// on the host (that would need a synchronising copy): a target outside [0, V) other than
// ignore_index is never used as an index; its row's loss (and gradient row) is NaN instead.
void cross_entropy_forward(const float* logits, const int64_t* targets, float* loss, float* lse, int64_t rows,
                           int64_t V, int64_t ignore_index, Stream stream);
void cross_entropy_forward(const double* logits, const int64_t* targets, double* loss, double* lse, int64_t rows,
                           int64_t V, int64_t ignore_index, Stream stream);
void cross_entropy_backward(const float* logits, const int64_t* targets, const float* lse, const float* row_scale,
                            float scale, float* dlogits, int64_t rows, int64_t V, int64_t ignore_index,
                            Stream stream);
void cross_entropy_backward(const double* logits, const int64_t* targets, const double* lse,
                            const double* row_scale, double scale, double* dlogits, int64_t rows, int64_t V,
                            int64_t ignore_index, Stream stream);

// ---- dropout (dropout.h): bit-identical to the CPU kernel and to NumPy.
void dropout_apply(const float* x, float* y, int64_t n, uint64_t key, uint64_t threshold, float scale,
                   uint64_t offset, Stream stream);
void dropout_apply(const double* x, double* y, int64_t n, uint64_t key, uint64_t threshold, double scale,
                   uint64_t offset, Stream stream);

// ---- Adam / AdamW (adamw.h): the same operations in the same order, no FMA contraction, so the
// result is bit-identical to the CPU kernel and to torch's single-tensor Adam.
void adam_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamStep& step, Stream stream);
void adam_update(double* p, const double* g, double* m, double* v, int64_t n, const AdamStep& step, Stream stream);

// ---- fused attention (attention.h), float32, head_dim 1..256. options.key_mask is a device
// pointer. FlashAttention-2 style: tiles of queries and keys in shared memory, online softmax,
// only lse saved; the backward recomputes P from lse, with D = rowsum(dout ∘ out) kept in
// `workspace` (attention_backward_workspace_size bytes, 4-byte aligned).
void attention_forward(const AttentionShape& shape, const float* q, AttentionStrides q_strides, const float* k,
                       AttentionStrides k_strides, const float* v, AttentionStrides v_strides, float* out,
                       AttentionStrides out_strides, float* lse, const AttentionOptions& options, Stream stream);
size_t attention_backward_workspace_size(const AttentionShape& shape);
void attention_backward(const AttentionShape& shape, const float* q, AttentionStrides q_strides, const float* k,
                        AttentionStrides k_strides, const float* v, AttentionStrides v_strides, const float* out,
                        AttentionStrides out_strides, const float* lse, const float* dout,
                        AttentionStrides dout_strides, float* dq, AttentionStrides dq_strides, float* dk,
                        AttentionStrides dk_strides, float* dv, AttentionStrides dv_strides,
                        const AttentionOptions& options, void* workspace, size_t workspace_bytes, Stream stream);

}  // namespace PYGPT_CUDA_NAMESPACE
}  // namespace pygpt
