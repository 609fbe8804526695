// Private: the library's thread pool. Split [0, n) into fixed chunks and run them on it.
// Chunk boundaries depend only on n and grain, never on the thread count or on which thread runs
// which chunk, so results are identical for any number of threads.
//
// The pool is our own (parallel.cpp), not OpenMP's: its idle workers block after a short spin.
// A training step alternates these kernels with NumPy's BLAS, whose own threads are a second pool;
// an OpenMP team spinning between regions takes a core from the BLAS threads (and they from it),
// which on a 2-core machine costs more than the regions themselves.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace pygpt::detail {

int parallel_threads();       // num_threads(), or 1 in a child forked after a parallel region
void note_parallel_region();  // marks the pool as started (see parallel.cpp: fork safety)

/// Runs fn(ctx, task, worker) for every task in [0, ntasks) on up to `threads` threads; the calling
/// thread is worker 0, the others are 1 .. threads-1 (use the index for per-thread scratch). Tasks
/// are handed out in increasing order from a shared counter. Runs everything on the calling thread
/// when threads <= 1, when called from inside a pool task, or while another thread uses the pool.
/// The first exception thrown by a task is rethrown here after all tasks have stopped.
void run_parallel(int64_t ntasks, int threads, void (*fn)(void*, int64_t, int), void* ctx);

template <class F>
void parallel_tasks(int64_t ntasks, int threads, F&& body) {
    using Fn = std::remove_reference_t<F>;
    run_parallel(ntasks, threads, [](void* c, int64_t t, int w) { (*static_cast<Fn*>(c))(t, w); },
                 const_cast<void*>(static_cast<const void*>(&body)));
}

template <class F>
void parallel_chunks(int64_t n, int64_t grain, F&& body) {
    if (n <= 0) return;
    const int64_t chunks = (n + grain - 1) / grain;
    const int threads = static_cast<int>(std::min<int64_t>(parallel_threads(), chunks));
    if (threads <= 1) {
        body(int64_t(0), n);
        return;
    }
    parallel_tasks(chunks, threads, [&](int64_t c, int) {
        const int64_t begin = c * grain;
        body(begin, std::min(n, begin + grain));
    });
}

}  // namespace pygpt::detail
