// Private: which instruction-set variant of the CPU kernels runs.
//
// Kernels are compiled three times on x86-64 (GCC/Clang): for the baseline (SSE2), with
// target("avx2,fma") and with target("avx512f"). All variants do the same IEEE operations in the
// same order, so they give bit-identical results; the wider ones are only faster. The compiler never
// contracts a*b+c into an FMA (-ffp-contract=off); a kernel that wants one calls std::fma, which is
// correctly rounded everywhere (an instruction where the variant has FMA, libm's fmaf elsewhere:
// the same bits, slower). The best variant the CPU supports is chosen when the library loads;
// PYGPT_ISA=baseline|avx2|avx512 caps it (for tests and comparisons).
#pragma once

namespace pygpt::detail {

enum class Isa { Baseline = 0, Avx2 = 1, Avx512 = 2 };  // ordered: wider is larger

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PYGPT_HAVE_X86_VARIANTS 1
#define PYGPT_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define PYGPT_TARGET_AVX512 __attribute__((target("avx512f")))
#else
#define PYGPT_HAVE_X86_VARIANTS 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define PYGPT_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define PYGPT_ALWAYS_INLINE inline
#endif

bool isa_supported(Isa isa);   // compiled in and supported by this CPU
Isa active_isa();              // the variant kernels use now
void set_active_isa(Isa isa);  // throws std::invalid_argument when !isa_supported(isa)
const char* isa_name(Isa isa); // "avx512", "avx2", "sse2" (x86-64 baseline) or "generic"

}  // namespace pygpt::detail
