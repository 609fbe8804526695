#include "pygpt/version.h"

#include "pygpt/parallel.h"
#include "cpu_dispatch.h"

#ifndef PYGPT_BUILD_TYPE
#define PYGPT_BUILD_TYPE "unknown"
#endif

namespace pygpt {

namespace {
std::string compiler_name() {
#if defined(__clang__)
    return "Clang " __clang_version__;
#elif defined(__GNUC__)
    return "GCC " + std::to_string(__GNUC__) + "." + std::to_string(__GNUC_MINOR__) + "." +
           std::to_string(__GNUC_PATCHLEVEL__);
#elif defined(_MSC_VER)
    return "MSVC " + std::to_string(_MSC_VER);
#else
    return "unknown";
#endif
}

}  // namespace

BuildInfo build_info() {
    BuildInfo info;
    info.version = PYGPT_VERSION_STRING;
    info.compiler = compiler_name();
    info.build_type = PYGPT_BUILD_TYPE;
    info.simd = detail::isa_name(detail::active_isa());
#if defined(_OPENMP)
    info.openmp = true;
#endif
    info.max_threads = num_threads();
#if defined(PYGPT_WITH_CUDA)
    info.cuda = true;
#endif
    return info;
}

}  // namespace pygpt
