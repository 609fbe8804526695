// Thread count used by every CPU kernel of the library.
#pragma once

namespace pygpt {

/// Threads a kernel may use (1 without OpenMP). Starts at omp_get_max_threads(), so
/// OMP_NUM_THREADS is honoured; process-wide, not per calling thread. In a child process forked
/// after a kernel ran in parallel it is 1: the OpenMP thread pool does not survive fork().
int num_threads();

/// Set the thread count for all later kernel calls; throws std::invalid_argument unless 1 <= n <= 1024.
/// Without OpenMP any n >= 1 is accepted and kernels still run on one thread.
void set_num_threads(int n);

}  // namespace pygpt
