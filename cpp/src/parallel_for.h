// Private: split [0, n) into fixed chunks and run them on the library's OpenMP threads.
// Chunk boundaries depend only on n and grain, never on the thread count, so results are
// identical for any number of threads.
#pragma once

#include <algorithm>
#include <cstdint>

namespace pygpt::detail {

int parallel_threads();       // num_threads(), or 1 in a child forked after a parallel region
void note_parallel_region();  // called before each OpenMP region (see parallel.cpp: fork safety)

template <class F>
void parallel_chunks(int64_t n, int64_t grain, F&& body) {
    if (n <= 0) return;
    const int64_t chunks = (n + grain - 1) / grain;
    const int threads = static_cast<int>(std::min<int64_t>(parallel_threads(), chunks));
    if (threads <= 1) {
        body(int64_t(0), n);
        return;
    }
    note_parallel_region();
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
    for (int64_t c = 0; c < chunks; ++c) {
        const int64_t begin = c * grain;
        body(begin, std::min(n, begin + grain));
    }
}

}  // namespace pygpt::detail
