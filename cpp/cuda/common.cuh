// Shared helpers of the CUDA kernels (private to cpp/cuda/): error checks, launches, small device
// functions. Every .cu file includes this first.
//
// Built two ways: by nvcc into the library (the normal case), and by the host C++ compiler with
// PYGPT_CUDA_EMULATE defined, for the CPU emulation test (emulate.h, cpp/tests/test_cuda_emu.cpp);
// then the API lives in namespace pygpt::cuda_emu so both can be linked into one program.
#pragma once

#if defined(PYGPT_CUDA_EMULATE)
#include "emulate.h"
#ifndef PYGPT_CUDA_NAMESPACE
#define PYGPT_CUDA_NAMESPACE cuda_emu
#endif
#else
#include <cuda_runtime.h>
#endif

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "pygpt/cuda.h"

namespace pygpt {
namespace PYGPT_CUDA_NAMESPACE {
namespace detail {

[[noreturn]] inline void fail_arg(const char* fn, const std::string& msg) {
    throw std::invalid_argument(std::string(fn) + ": " + msg);
}

#if defined(PYGPT_CUDA_EMULATE)
inline void check_cuda(cudaError_t, const char*, const char*) {}
inline void check_launch(const char*) {}
inline int max_dynamic_smem(const char*) { return 227 * 1024; }
template <class Kernel>
inline void allow_smem(Kernel, size_t, const char*) {}

/// kernel<<<grid, block, smem, stream>>>(args...), checked.
template <class... KArgs, class... Args>
inline void launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t, const char*,
                   Args&&... args) {
    const std::function<void()> body = [&] { kernel(args...); };
    ::pygpt_emu::run(grid, block, smem, body);
}
#else
/// A failed CUDA call: std::runtime_error naming the kernel entry point and the CUDA error. A
/// missing device or driver says so in words (the Python layer matches "no CUDA device").
[[noreturn]] inline void throw_cuda(cudaError_t err, const char* fn, const char* what) {
    std::string msg = std::string(fn) + ": " + what + " failed: " + cudaGetErrorName(err) + " (" +
                      cudaGetErrorString(err) + ")";
    if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver || err == cudaErrorInitializationError)
        msg += " -- no CUDA device is usable here";
    throw std::runtime_error(msg);
}
inline void check_cuda(cudaError_t err, const char* fn, const char* what) {
    if (err != cudaSuccess) {
        (void)cudaGetLastError();  // clear a non-sticky error so the next call starts clean
        throw_cuda(err, fn, what);
    }
}
inline void check_launch(const char* fn) { check_cuda(cudaGetLastError(), fn, "kernel launch"); }

/// Largest dynamic shared memory a block may opt in to on the current device.
inline int max_dynamic_smem(const char* fn) {
    int dev = 0, bytes = 0;
    check_cuda(cudaGetDevice(&dev), fn, "cudaGetDevice");
    check_cuda(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), fn,
               "cudaDeviceGetAttribute(MaxSharedMemoryPerBlockOptin)");
    return bytes;
}

/// Lets `kernel` use `bytes` of dynamic shared memory (above the default 48 KiB needs an opt-in,
/// which is per device: it is set every time, it costs about a microsecond).
template <class Kernel>
inline void allow_smem(Kernel kernel, size_t bytes, const char* fn) {
    if (bytes <= 48 * 1024) return;
    const int limit = max_dynamic_smem(fn);
    if (bytes > size_t(limit))
        throw std::runtime_error(std::string(fn) + ": this kernel needs " + std::to_string(bytes) +
                                 " bytes of shared memory per block, the device allows " + std::to_string(limit));
    check_cuda(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)),
               fn, "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
}

template <class... KArgs, class... Args>
inline void launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   const char* fn, Args&&... args) {
    kernel<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
    check_launch(fn);
}
#endif

// ------------------------------------------------------------------------------ device helpers
/// SplitMix64 finalizer (pygpt/random.py, cpp/src/dropout.cpp).
__device__ __forceinline__ uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
inline uint64_t host_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
template <class T>
__device__ __forceinline__ T warp_max(T v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const T w = __shfl_xor_sync(0xffffffffu, v, o);
        v = w > v ? w : v;
    }
    return v;
}

/// Blocks for a grid-stride loop over n items with `threads` per block (at most 2^16 blocks).
inline unsigned grid_for(int64_t n, int threads) {
    const int64_t b = (n + threads - 1) / threads;
    return unsigned(b < 1 ? 1 : (b > 65536 ? 65536 : b));
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace detail
}  // namespace PYGPT_CUDA_NAMESPACE
}  // namespace pygpt
