// Library version and a description of how this copy was built.
#pragma once

#include <string>

#define PYGPT_VERSION_MAJOR 0
#define PYGPT_VERSION_MINOR 1
#define PYGPT_VERSION_PATCH 0
#define PYGPT_VERSION_STRING "0.1.0"

namespace pygpt {

/// What was compiled in. Filled by the library at run time (thread count) and build time (the rest).
struct BuildInfo {
    std::string version;     // PYGPT_VERSION_STRING
    std::string compiler;    // e.g. "GCC 12.2.0"
    std::string build_type;  // CMake build type, e.g. "Release"
    std::string simd;        // CPU kernel variant in use: "avx2", "sse2" (x86-64 baseline) or "generic"
    bool openmp = false;     // compiled with OpenMP
    int max_threads = 1;     // threads a kernel may use now (see num_threads())
    bool cuda = false;       // CUDA kernels compiled in (PYGPT_WITH_CUDA)
};

BuildInfo build_info();

}  // namespace pygpt
