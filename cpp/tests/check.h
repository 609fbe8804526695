// The C++ unit tests' harness: CHECK(cond, printf-style message) counts a check and, when cond is
// false, a failure (the first 30 are printed with file:line); main ends with `return check_summary();`,
// which prints the totals and gives the exit status ctest reads.
#pragma once

#include <cstdio>

namespace pygpt_test {
inline int g_checks = 0;
inline int g_failed = 0;
}  // namespace pygpt_test

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        ++pygpt_test::g_checks;                                               \
        if (!(cond) && ++pygpt_test::g_failed <= 30) {                        \
            std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);         \
            std::fprintf(stderr, __VA_ARGS__);                                \
            std::fprintf(stderr, "\n");                                       \
        }                                                                     \
    } while (0)

inline int check_summary() {
    std::printf("%d checks, %d failed\n", pygpt_test::g_checks, pygpt_test::g_failed);
    return pygpt_test::g_failed == 0 ? 0 : 1;
}
