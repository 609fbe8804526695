#include "pygpt/parallel.h"

#include <atomic>
#include <stdexcept>
#include <string>

#include "parallel_for.h"

#if defined(_OPENMP)
#include <omp.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define PYGPT_HAVE_ATFORK 1
#endif

namespace pygpt {

namespace {
constexpr int kMaxThreads = 1024;

int initial_threads() {
#if defined(_OPENMP)
    return omp_get_max_threads();
#else
    return 1;
#endif
}

std::atomic<int> g_threads{initial_threads()};
std::atomic<bool> g_pool_started{false};  // an OpenMP parallel region has run in this process
std::atomic<bool> g_forked{false};        // we are a child forked after that: stay serial

#if PYGPT_HAVE_ATFORK
// GNU libgomp's thread pool does not survive fork(): a parallel region in the child waits forever
// for threads that only existed in the parent. The child therefore runs every kernel serially.
void on_fork_child() {
    if (g_pool_started.load(std::memory_order_relaxed)) g_forked.store(true, std::memory_order_relaxed);
}
const int g_atfork_registered = pthread_atfork(nullptr, nullptr, &on_fork_child);
#endif
}  // namespace

namespace detail {
int parallel_threads() {
    if (g_forked.load(std::memory_order_relaxed)) return 1;
    return g_threads.load(std::memory_order_relaxed);
}
void note_parallel_region() {
    g_pool_started.store(true, std::memory_order_relaxed);
}
}  // namespace detail

int num_threads() {
    return detail::parallel_threads();
}

void set_num_threads(int n) {
    if (n < 1 || n > kMaxThreads)
        throw std::invalid_argument("set_num_threads: n must be in [1, " + std::to_string(kMaxThreads) + "], got " +
                                    std::to_string(n));
#if defined(_OPENMP)
    g_threads.store(n, std::memory_order_relaxed);
#endif
}

}  // namespace pygpt
