// pygpt._C: thin bindings over the C++ kernel library (cpp/include/pygpt).
// One bind_*.cpp per concern; the shared buffer checks and error conventions are in checks.h.
#include <pygpt/pygpt.h>

#include "checks.h"

namespace pygpt_py {

// bind_cuda.cpp: the pygpt._C.cuda submodule (a no-op without CUDA) and its part of build_info.
void bind_cuda(py::module_& m);
py::dict cuda_build_info();

namespace {

py::dict build_info() {
    const pygpt::BuildInfo info = pygpt::build_info();
    py::dict d;
    d["version"] = info.version;
    d["compiler"] = info.compiler;
    d["build_type"] = info.build_type;
    d["simd"] = info.simd;
    d["openmp"] = info.openmp;
    d["max_threads"] = info.max_threads;
    d["cuda"] = info.cuda;
    for (auto item : cuda_build_info()) d[item.first] = item.second;  // cuda_kernels, cuda_architectures, cuda_runtime
    return d;
}

}  // namespace
}  // namespace pygpt_py

PYBIND11_MODULE(_C, m) {
    using namespace pygpt_py;
    m.doc() = "pygpt native kernels (C++/OpenMP). Thin bindings over cpp/include/pygpt; see pygpt.backend.";
    m.attr("__version__") = PYGPT_VERSION_STRING;

    m.def("build_info", &build_info,
          "How the extension was built: version, compiler, build_type, simd, openmp, max_threads, cuda,\n"
          "cuda_kernels (names in pygpt._C.cuda), cuda_architectures (e.g. [80, 90]), cuda_runtime (e.g. 13000).");
    m.def("num_threads", &pygpt::num_threads, "Threads the CPU kernels use (1 without OpenMP).");
    m.def("set_num_threads", &pygpt::set_num_threads, py::arg("n"),
          "Set the kernels' thread count (1 <= n <= 1024), process-wide.");

    bind_gelu(m);
    bind_ops(m);
    bind_bpe(m);
    bind_attention(m);
    bind_cuda(m);
}
