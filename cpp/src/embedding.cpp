// Embedding backward (scatter-add) on the CPU. Contract in pygpt/embedding.h.
//
// np.add.at walks the ids one element at a time; here each thread owns a block of columns and walks
// all ids in order, adding whole row segments (vectorised). Columns never meet across threads, so there
// are no races and no atomics, and each element receives its additions in id order: the result is the
// sequential one for every thread count.
#include "pygpt/embedding.h"

#include <stdexcept>
#include <string>

#include "cpu_dispatch.h"
#include "parallel_for.h"

namespace pygpt {
namespace {

constexpr int64_t kColGrain = 64;  // columns per parallel chunk

template <class T>
PYGPT_ALWAYS_INLINE void scatter_cols(const int64_t* ids, const T* dy, T* dW, int64_t n, int64_t C, int64_t c0,
                                      int64_t c1) {
    const int64_t w = c1 - c0;
    for (int64_t i = 0; i < n; ++i) {
        T* __restrict dst = dW + ids[i] * C + c0;
        const T* __restrict src = dy + i * C + c0;
        for (int64_t j = 0; j < w; ++j) dst[j] += src[j];
    }
}

#define PYGPT_EMB_LOOPS(ISA, ATTR)                                                                      \
    template <class T>                                                                                  \
    ATTR void scatter_##ISA(const int64_t* ids, const T* dy, T* dW, int64_t n, int64_t C, int64_t c0,    \
                            int64_t c1) {                                                               \
        scatter_cols(ids, dy, dW, n, C, c0, c1);                                                        \
    }

PYGPT_EMB_LOOPS(baseline, )
#if PYGPT_HAVE_X86_VARIANTS
PYGPT_EMB_LOOPS(avx2, PYGPT_TARGET_AVX2)
PYGPT_EMB_LOOPS(avx512, PYGPT_TARGET_AVX512)
#endif

template <class T>
void impl(const int64_t* ids, const T* dy, T* dW, int64_t n, int64_t V, int64_t C) {
    const char* fn = "embedding_backward: ";
    if (n < 0 || V < 0 || C < 0)
        throw std::invalid_argument(std::string(fn) + "n, V and C must be >= 0, got " + std::to_string(n) + ", " +
                                    std::to_string(V) + ", " + std::to_string(C));
    if (n == 0 || C == 0) return;
    if (ids == nullptr || dy == nullptr || dW == nullptr)
        throw std::invalid_argument(std::string(fn) + "ids, dy and dW must not be null with n, C > 0");
    for (int64_t i = 0; i < n; ++i)
        if (ids[i] < 0 || ids[i] >= V)
            throw std::invalid_argument(std::string(fn) + "ids[" + std::to_string(i) + "] = " + std::to_string(ids[i]) +
                                        " is outside [0, " + std::to_string(V) + ")");
    const detail::Isa isa = detail::active_isa();
    detail::parallel_chunks(C, kColGrain, [&](int64_t c0, int64_t c1) {
#if PYGPT_HAVE_X86_VARIANTS
        if (isa == detail::Isa::Avx512) return scatter_avx512(ids, dy, dW, n, C, c0, c1);
        if (isa == detail::Isa::Avx2) return scatter_avx2(ids, dy, dW, n, C, c0, c1);
#endif
        (void)isa;
        scatter_baseline(ids, dy, dW, n, C, c0, c1);
    });
}

}  // namespace

void embedding_backward(const int64_t* ids, const float* dy, float* dW, int64_t n, int64_t V, int64_t C) {
    impl(ids, dy, dW, n, V, C);
}
void embedding_backward(const int64_t* ids, const double* dy, double* dW, int64_t n, int64_t V, int64_t C) {
    impl(ids, dy, dW, n, V, C);
}

}  // namespace pygpt
