// Host-runtime stand-ins for the CPU-emulated CUDA kernels (the tools/cuda_emu Python build only):
// one "device", every pointer accepted (the emulated kernels work on host memory).
#include <stdexcept>
#include <string>

#include "pygpt/cuda.h"

namespace pygpt {
namespace PYGPT_CUDA_NAMESPACE {

Info info() {
    Info i;
    i.kernels = {"gelu_forward",          "gelu_backward",          "layer_norm_forward", "layer_norm_backward",
                 "cross_entropy_forward", "cross_entropy_backward", "dropout",            "adam_update",
                 "attention_forward",     "attention_backward"};
    i.architectures = "80,90";  // what a real build reports by default
    i.runtime_version = 0;
    return i;
}

int device_count() { return 1; }

void require_device(const char*) {}

void check_device_buffer(const void* p, size_t bytes, const char* who, const char* name) {
    if (bytes != 0 && p == nullptr) throw std::invalid_argument(std::string(who) + ": " + name + " is null");
}

}  // namespace PYGPT_CUDA_NAMESPACE
}  // namespace pygpt
