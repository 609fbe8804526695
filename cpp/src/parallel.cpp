#include "pygpt/parallel.h"

#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "parallel_for.h"

#if defined(_OPENMP)
#include <omp.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define PYGPT_HAVE_ATFORK 1
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define PYGPT_PAUSE() _mm_pause()
#else
#define PYGPT_PAUSE() ((void)0)
#endif

namespace pygpt {

namespace {
constexpr int kMaxThreads = 1024;
// Polls of a flag before a waiting thread blocks (a few microseconds): long enough to catch the next
// region of a kernel sequence, short enough not to compete with NumPy's BLAS threads for the cores.
constexpr int kSpin = 2000;

int initial_threads() {
#if defined(_OPENMP)
    return omp_get_max_threads();  // honours OMP_NUM_THREADS
#else
    return 1;
#endif
}

std::atomic<int> g_threads{initial_threads()};
std::atomic<bool> g_pool_started{false};  // the pool has run a job in this process
std::atomic<bool> g_forked{false};        // we are a child forked after that: stay serial

#if PYGPT_HAVE_ATFORK
// Worker threads do not survive fork(): a child forked after the pool started runs every kernel
// serially (and never touches the pool, whose locks may have been held at the fork).
void on_fork_child() {
    if (g_pool_started.load(std::memory_order_relaxed)) g_forked.store(true, std::memory_order_relaxed);
}
const int g_atfork_registered = pthread_atfork(nullptr, nullptr, &on_fork_child);
#endif

thread_local bool t_in_task = false;  // nested calls run serially

/// A fixed set of workers (grown on demand, never shrunk) that wait for one job at a time.
class Pool {
public:
    void run(int64_t ntasks, int threads, void (*fn)(void*, int64_t, int), void* ctx) {
        std::unique_lock<std::mutex> use(use_, std::try_to_lock);
        if (!use.owns_lock()) return serial(ntasks, fn, ctx);  // another thread's job is running
        grow(threads - 1);
        {
            // the job is published under m_ together with its generation, so a worker's snapshot of
            // (generation, job_threads_) is always of one job
            std::lock_guard<std::mutex> lk(m_);
            fn_ = fn;
            ctx_ = ctx;
            ntasks_ = ntasks;
            job_threads_ = threads;
            next_.store(0, std::memory_order_relaxed);
            error_ = nullptr;
            running_.store(threads - 1, std::memory_order_relaxed);
            generation_.fetch_add(1, std::memory_order_release);
        }
        cv_job_.notify_all();
        work(0);
        for (int s = 0; s < kSpin && running_.load(std::memory_order_acquire) != 0; ++s) PYGPT_PAUSE();
        if (running_.load(std::memory_order_acquire) != 0) {
            std::unique_lock<std::mutex> lk(m_);
            cv_done_.wait(lk, [&] { return running_.load(std::memory_order_acquire) == 0; });
        }
        if (error_) std::rethrow_exception(error_);
    }

private:
    static void serial(int64_t ntasks, void (*fn)(void*, int64_t, int), void* ctx) {
        for (int64_t t = 0; t < ntasks; ++t) fn(ctx, t, 0);
    }

    void work(int worker) {
        t_in_task = true;
        try {
            for (int64_t t; (t = next_.fetch_add(1, std::memory_order_relaxed)) < ntasks_;) fn_(ctx_, t, worker);
        } catch (...) {
            std::lock_guard<std::mutex> lk(err_m_);
            if (!error_) error_ = std::current_exception();
            next_.store(ntasks_, std::memory_order_relaxed);  // stop handing out tasks
        }
        t_in_task = false;
    }

    void grow(int n) {
        while (int(workers_) < n) {
            const int index = int(workers_) + 1;
            std::thread(&Pool::loop, this, index, generation_.load(std::memory_order_relaxed)).detach();
            ++workers_;
        }
    }

    void loop(int index, uint64_t seen) {
        for (;;) {
            uint64_t g = generation_.load(std::memory_order_acquire);
            for (int s = 0; s < kSpin && g == seen; ++s) {
                PYGPT_PAUSE();
                g = generation_.load(std::memory_order_acquire);
            }
            int job_threads;
            {
                std::unique_lock<std::mutex> lk(m_);
                if (g == seen)
                    cv_job_.wait(lk, [&] { return generation_.load(std::memory_order_acquire) != seen; });
                seen = generation_.load(std::memory_order_acquire);  // the newest job, read with its size
                job_threads = job_threads_;
            }
            // A job cannot finish without the workers it counts on, so a worker skips only jobs it
            // is not part of: `running_` counts exactly the workers 1 .. job_threads-1.
            if (index >= job_threads) continue;
            work(index);
            if (running_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
                std::lock_guard<std::mutex> lk(m_);
                cv_done_.notify_all();
            }
        }
    }

    std::mutex use_;  // held by the thread whose job runs
    std::mutex m_;
    std::mutex err_m_;
    std::condition_variable cv_job_, cv_done_;
    size_t workers_ = 0;
    std::atomic<uint64_t> generation_{0};
    std::atomic<int> running_{0};
    std::atomic<int64_t> next_{0};
    void (*fn_)(void*, int64_t, int) = nullptr;
    void* ctx_ = nullptr;
    int64_t ntasks_ = 0;
    int job_threads_ = 0;
    std::exception_ptr error_;
};

Pool& pool() {
    static Pool* p = new Pool();  // never destroyed: its detached workers may outlive static destructors
    return *p;
}
}  // namespace

namespace detail {
int parallel_threads() {
    if (g_forked.load(std::memory_order_relaxed)) return 1;
    return g_threads.load(std::memory_order_relaxed);
}
void note_parallel_region() {
    g_pool_started.store(true, std::memory_order_relaxed);
}
void run_parallel(int64_t ntasks, int threads, void (*fn)(void*, int64_t, int), void* ctx) {
    if (ntasks <= 0) return;
    threads = int(std::min<int64_t>(threads, ntasks));
    if (threads <= 1 || t_in_task || g_forked.load(std::memory_order_relaxed)) {
        for (int64_t t = 0; t < ntasks; ++t) fn(ctx, t, 0);
        return;
    }
    note_parallel_region();
    pool().run(ntasks, threads, fn, ctx);
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
