// A CPU emulator for the CUDA kernels of cpp/cuda/ (test builds only; never part of the library).
//
// CI has nvcc but no GPU, so the kernels compile on every commit but never run there. This header
// lets the same .cu sources compile as plain C++ (PYGPT_CUDA_EMULATE) and run on the CPU, so that
// cpp/tests/test_cuda_emu.cpp checks their indexing, tiling, masking and dropout bits against the
// CPU kernels. Each CUDA thread of a block is a fiber (ucontext) on one OS thread; the blocks of a
// grid run one after another. __syncthreads() and the warp shuffles are barriers over the block or
// the warp: a fiber that reaches one yields until every live fiber of its group has arrived. So the
// emulation checks the algorithm's synchronisation too: the fibers run in a fixed greedy order (the
// first runnable one always goes on, so the first warps run as far ahead of the others as the
// barriers allow; PYGPT_EMU_ORDER=reverse starts from the last thread), so a missing __syncthreads
// between a shared-memory write and another warp's read shows up as wrong results; a __syncthreads
// that not every thread reaches is reported as a deadlock. Dynamic shared memory starts filled with
// 0xFF bytes (NaN floats), so reads of unwritten shared memory show up too.
//
// What it cannot check: timing, occupancy, register and shared-memory limits, bank conflicts,
// memory-model subtleties between warps, and the device math library (host libm is used).
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <vector>

// ---- CUDA keywords and types --------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) alignas(n)

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
struct alignas(16) double2 { double x, y; };
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline float2 make_float2(float x, float y) { return {x, y}; }
inline double2 make_double2(double x, double y) { return {x, y}; }

using cudaStream_t = struct CUstream_st*;
enum cudaError_t { cudaSuccess = 0 };
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t) { return "no error (emulated)"; }

// Correctly rounded operations that nvcc never contracts into FMAs: plain operations here (the
// emulated build uses -ffp-contract=off).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __dsqrt_rn(double a) { return std::sqrt(a); }
inline float rsqrtf(float a) { return 1.0f / std::sqrt(a); }
inline double rsqrt(double a) { return 1.0 / std::sqrt(a); }
template <class T>
inline T __ldg(const T* p) { return *p; }

namespace pygpt_emu {

constexpr size_t kStackBytes = 256 * 1024;

struct Fiber {
    ucontext_t ctx;
    std::vector<char> stack;
    dim3 tid;
    bool done = false;
};

struct Group {  // a block or a warp: barrier state
    unsigned live = 0, arrived = 0, generation = 0;
};

struct State {
    dim3 grid, block, block_idx;
    std::vector<Fiber> fibers;
    std::vector<Group> warps;
    Group all;
    std::vector<uint64_t> warp_buf;  // 32 slots per warp for shuffles
    std::vector<uint64_t> smem;      // dynamic shared memory
    ucontext_t scheduler;
    int current = -1;
    const std::function<void()>* body = nullptr;
    unsigned progress = 0;  // bumped whenever a barrier releases or a fiber finishes
};

inline State& state() {
    static State s;
    return s;
}

inline const dim3& thread_idx() { return state().fibers[size_t(state().current)].tid; }
inline const dim3& block_idx() { return state().block_idx; }
inline const dim3& block_dim() { return state().block; }
inline const dim3& grid_dim() { return state().grid; }
inline unsigned linear_tid() {
    const dim3& t = thread_idx();
    const dim3& b = state().block;
    return (t.z * b.y + t.y) * b.x + t.x;
}
inline unsigned char* dynamic_smem() { return reinterpret_cast<unsigned char*>(state().smem.data()); }

inline void yield() {
    State& s = state();
    swapcontext(&s.fibers[size_t(s.current)].ctx, &s.scheduler);
}

inline void barrier(Group& g) {
    const unsigned gen = g.generation;
    if (++g.arrived == g.live) {
        g.arrived = 0;
        ++g.generation;
        ++state().progress;
        return;
    }
    while (g.generation == gen) yield();
}

inline void syncthreads() { barrier(state().all); }
inline void syncwarp() { barrier(state().warps[linear_tid() / 32]); }

template <class T>
inline T shfl_xor(T v, int lane_mask) {
    static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
    State& s = state();
    const unsigned t = linear_tid(), w = t / 32, lane = t % 32;
    std::memcpy(&s.warp_buf[w * 32 + lane], &v, sizeof(T));
    syncwarp();
    T r;
    const unsigned src = lane ^ unsigned(lane_mask);
    std::memcpy(&r, &s.warp_buf[w * 32 + (src < 32 ? src : lane)], sizeof(T));
    syncwarp();
    return r;
}

inline void fiber_entry() {
    State& s = state();
    (*s.body)();
    Fiber& f = s.fibers[size_t(s.current)];
    f.done = true;
    ++s.progress;
    // an exited thread no longer takes part in barriers (as on Volta and later)
    const unsigned t = linear_tid();
    Group* groups[2] = {&s.all, &s.warps[t / 32]};
    for (Group* g : groups) {
        --g->live;
        if (g->live > 0 && g->arrived == g->live) {
            g->arrived = 0;
            ++g->generation;
        }
    }
    // returning resumes uc_link (the scheduler)
}

/// PYGPT_EMU_ORDER=reverse runs the fibers last thread first (ctest runs both orders).
inline bool reverse_order() {
    static const bool r = [] {
        const char* e = std::getenv("PYGPT_EMU_ORDER");
        return e != nullptr && std::strcmp(e, "reverse") == 0;
    }();
    return r;
}

/// Runs body() as every thread of every block of the grid.
inline void run(dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()>& body) {
    State& s = state();
    const unsigned nthreads = block.x * block.y * block.z;
    if (nthreads == 0 || nthreads > 1024) throw std::runtime_error("emulated launch: bad block size");
    if (grid.x == 0 || grid.y == 0 || grid.z == 0) throw std::runtime_error("emulated launch: empty grid");
    s.grid = grid;
    s.block = block;
    s.body = &body;
    s.fibers.resize(nthreads);
    for (Fiber& f : s.fibers)
        if (f.stack.size() != kStackBytes) f.stack.assign(kStackBytes, 0);
    const unsigned nwarps = (nthreads + 31) / 32;
    s.warps.assign(nwarps, Group{});
    s.warp_buf.assign(size_t(nwarps) * 32, 0);
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                s.block_idx = dim3(bx, by, bz);
                s.smem.assign((smem_bytes + 7) / 8, ~uint64_t(0));  // NaN-filled "uninitialised" memory
                s.all = Group{nthreads, 0, 0};
                for (unsigned w = 0; w < nwarps; ++w)
                    s.warps[w] = Group{std::min(32u, nthreads - 32 * w), 0, 0};
                for (unsigned t = 0; t < nthreads; ++t) {
                    Fiber& f = s.fibers[t];
                    f.done = false;
                    f.tid = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
                    getcontext(&f.ctx);
                    f.ctx.uc_stack.ss_sp = f.stack.data();
                    f.ctx.uc_stack.ss_size = f.stack.size();
                    f.ctx.uc_link = &s.scheduler;
                    makecontext(&f.ctx, fiber_entry, 0);
                }
                // Greedy schedule: always resume the first runnable fiber in the order (thread 0 first,
                // or the last thread first), so the first warps run as far ahead of the others as the
                // barriers allow: a missing __syncthreads between a shared-memory write and another
                // warp's read then reads the wrong data instead of passing by luck.
                for (;;) {
                    bool any = false, moved = false;
                    for (unsigned i = 0; i < nthreads; ++i) {
                        const unsigned t = reverse_order() ? nthreads - 1 - i : i;
                        if (s.fibers[t].done) continue;
                        any = true;
                        const unsigned before = s.progress;
                        s.current = int(t);
                        swapcontext(&s.scheduler, &s.fibers[t].ctx);
                        if (s.progress != before) {  // a barrier opened or a thread ended: start over
                            moved = true;
                            break;
                        }
                    }
                    s.current = -1;
                    if (!any) break;
                    if (!moved) {
                        std::fprintf(stderr, "emulated kernel deadlock: block (%u, %u, %u), a barrier that not every "
                                             "thread reaches\n", bx, by, bz);
                        std::abort();
                    }
                }
            }
}

}  // namespace pygpt_emu

#define threadIdx (::pygpt_emu::thread_idx())
#define blockIdx (::pygpt_emu::block_idx())
#define blockDim (::pygpt_emu::block_dim())
#define gridDim (::pygpt_emu::grid_dim())
inline void __syncthreads() { ::pygpt_emu::syncthreads(); }
inline void __syncwarp(unsigned = 0xffffffffu) { ::pygpt_emu::syncwarp(); }
template <class T>
inline T __shfl_xor_sync(unsigned, T v, int lane_mask, int = 32) {
    return ::pygpt_emu::shfl_xor(v, lane_mask);
}
