// Host-side CUDA helpers of the library: what was compiled, is there a device, is a pointer device
// memory. No kernels here. Not part of the CPU emulation build (there is no runtime to ask).
#if !defined(PYGPT_CUDA_EMULATE)
#include "common.cuh"

#include <cstring>
#include <mutex>

#define PYGPT_STR2(...) #__VA_ARGS__
#define PYGPT_STR(...) PYGPT_STR2(__VA_ARGS__)

namespace pygpt {
namespace PYGPT_CUDA_NAMESPACE {
namespace {

/// "800,900" (nvcc's __CUDA_ARCH_LIST__, compute capability x 10) -> "80,90".
std::string arch_list() {
#if defined(__CUDA_ARCH_LIST__)
    const std::string raw = PYGPT_STR(__CUDA_ARCH_LIST__);
    std::string out, num;
    auto flush = [&] {
        if (num.empty()) return;
        const int v = std::stoi(num);
        if (!out.empty()) out += ",";
        out += std::to_string(v % 10 == 0 ? v / 10 : v);
        num.clear();
    };
    for (char c : raw) {
        if (c >= '0' && c <= '9') num += c;
        else flush();
    }
    flush();
    return out;
#elif defined(PYGPT_CUDA_ARCHITECTURES)
    return PYGPT_CUDA_ARCHITECTURES;
#else
    return "";
#endif
}

/// cuMemGetAddressRange from the driver, through the runtime (no link against libcuda); null if
/// the driver does not provide it.
using GetRange = int (*)(unsigned long long* base, size_t* size, unsigned long long ptr);
GetRange address_range_fn() {
    static GetRange fn = nullptr;
    static std::once_flag once;
    std::call_once(once, [] {
#if CUDART_VERSION >= 12000  // older runtimes: no range check (the other checks still run)
        void* f = nullptr;
        cudaDriverEntryPointQueryResult status{};
#if CUDART_VERSION >= 12050
        const cudaError_t err = cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &f, 12000, cudaEnableDefault,
                                                                 &status);
#else
        const cudaError_t err = cudaGetDriverEntryPoint("cuMemGetAddressRange", &f, cudaEnableDefault, &status);
#endif
        if (err == cudaSuccess && status == cudaDriverEntryPointSuccess) fn = reinterpret_cast<GetRange>(f);
        else (void)cudaGetLastError();
#endif
    });
    return fn;
}

}  // namespace

Info info() {
    Info i;
    i.kernels = {"gelu_forward",          "gelu_backward",          "layer_norm_forward", "layer_norm_backward",
                 "cross_entropy_forward", "cross_entropy_backward", "dropout",            "adam_update",
                 "attention_forward",     "attention_backward"};
    i.architectures = arch_list();
    i.runtime_version = CUDART_VERSION;
    return i;
}

int device_count() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

void require_device(const char* who) {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        throw std::runtime_error(std::string(who) + ": no CUDA device is usable here (cudaGetDeviceCount: " +
                                 cudaGetErrorName(err) + ", " + cudaGetErrorString(err) + ")");
    }
    if (n < 1) throw std::runtime_error(std::string(who) + ": no CUDA device is usable here (no device found)");
}

void check_device_buffer(const void* p, size_t bytes, const char* who, const char* name) {
    if (bytes == 0) return;
    const std::string what = std::string(who) + ": " + name;
    cudaPointerAttributes a{};
    const cudaError_t err = cudaPointerGetAttributes(&a, p);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver || err == cudaErrorInitializationError)
            throw std::runtime_error(what + ": no CUDA device is usable here (" + cudaGetErrorString(err) + ")");
        throw std::invalid_argument(what + " is not a valid CUDA pointer (" + cudaGetErrorString(err) + ")");
    }
    if (a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged)
        throw std::invalid_argument(what + " is not device memory (host or unregistered address " +
                                    std::to_string(reinterpret_cast<uintptr_t>(p)) + ")");
    int dev = 0;
    detail::check_cuda(cudaGetDevice(&dev), who, "cudaGetDevice");
    if (a.device != dev)
        throw std::invalid_argument(what + " lives on CUDA device " + std::to_string(a.device) +
                                    ", the current device is " + std::to_string(dev) +
                                    " (select it first, e.g. with cupy.cuda.Device(" + std::to_string(a.device) + "))");
    if (GetRange range = address_range_fn()) {
        unsigned long long base = 0;
        size_t size = 0;
        const auto addr = static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(p));
        if (range(&base, &size, addr) == 0) {
            if (addr + bytes > base + size)
                throw std::invalid_argument(what + " extends " + std::to_string(addr + bytes - (base + size)) +
                                            " bytes past the end of its allocation");
        }
    }
}

}  // namespace PYGPT_CUDA_NAMESPACE
}  // namespace pygpt
#endif  // !PYGPT_CUDA_EMULATE
