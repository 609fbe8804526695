#include "cpu_dispatch.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

namespace pygpt::detail {

bool isa_supported(Isa isa) {
    if (isa == Isa::Baseline) return true;
#if PYGPT_HAVE_X86_VARIANTS
    __builtin_cpu_init();
    if (isa == Isa::Avx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (isa == Isa::Avx512) return __builtin_cpu_supports("avx512f");
#endif
    return false;
}

namespace {
Isa initial_isa() {
    Isa cap = Isa::Avx512;  // PYGPT_ISA lowers the ceiling; it never enables what the CPU lacks
    if (const char* env = std::getenv("PYGPT_ISA")) {
        if (std::strcmp(env, "baseline") == 0) cap = Isa::Baseline;
        else if (std::strcmp(env, "avx2") == 0) cap = Isa::Avx2;
    }
    for (Isa isa : {Isa::Avx512, Isa::Avx2})
        if (isa <= cap && isa_supported(isa)) return isa;
    return Isa::Baseline;
}
std::atomic<Isa> g_isa{initial_isa()};
}  // namespace

Isa active_isa() {
    return g_isa.load(std::memory_order_relaxed);
}

void set_active_isa(Isa isa) {
    if (!isa_supported(isa)) throw std::invalid_argument(std::string("CPU variant not supported: ") + isa_name(isa));
    g_isa.store(isa, std::memory_order_relaxed);
}

const char* isa_name(Isa isa) {
    if (isa == Isa::Avx512) return "avx512";
    if (isa == Isa::Avx2) return "avx2";
#if defined(__x86_64__)
    return "sse2";
#else
    return "generic";
#endif
}

}  // namespace pygpt::detail
