// pygpt._C: thin bindings over the C++ kernel library (cpp/include/pygpt).
//
// A binding only checks buffers (type, dtype, shape, C-contiguity, alignment, writability,
// overlap), releases the GIL, and calls the C++ API. Nothing is converted or copied: a
// float64 array is never silently turned into float32, a non-contiguous one never copied.
// Errors: wrong Python type or dtype -> TypeError; wrong shape/layout/value -> ValueError;
// C++ std::invalid_argument -> ValueError, std::runtime_error -> RuntimeError (pybind11).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include <pygpt/pygpt.h>

namespace py = pybind11;

namespace {

enum class DType { F32, F64 };

std::string type_name(const py::handle& obj) {
    return py::str(py::type::handle_of(obj).attr("__name__"));
}

std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) {
        s += std::to_string(a.shape(i));
        if (a.ndim() == 1 || i + 1 < a.ndim()) s += a.ndim() == 1 ? "," : ", ";
    }
    return s + ")";
}

bool native_byte_order(char bo) {
    const uint16_t probe = 1;
    const bool little = *reinterpret_cast<const uint8_t*>(&probe) == 1;
    return bo == '=' || bo == '|' || bo == (little ? '<' : '>');
}

/// `obj` as an ndarray of float32/float64 that is C-contiguous and aligned (else TypeError/ValueError).
py::array checked_array(const py::object& obj, const char* name, DType* dtype) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(name) + " must be a numpy.ndarray of float32 or float64, got " +
                             type_name(obj));
    auto a = py::reinterpret_borrow<py::array>(obj);
    const py::dtype dt = a.dtype();
    const int num = dt.num();
    if (num == py::dtype::num_of<float>()) *dtype = DType::F32;
    else if (num == py::dtype::num_of<double>()) *dtype = DType::F64;
    else throw py::type_error(std::string(name) + " must have dtype float32 or float64, got " + std::string(py::str(dt)));
    if (!native_byte_order(dt.byteorder()))
        throw py::type_error(std::string(name) + " must have native byte order, got dtype " + std::string(py::str(dt)));
    if (!(a.flags() & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_))
        throw py::value_error(std::string(name) + " must be C-contiguous (use numpy.ascontiguousarray)");
    if (!(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
        throw py::value_error(std::string(name) + " must be aligned to its dtype");
    return a;
}

void check_like(const py::array& a, DType da, const char* name, const py::array& ref, DType dref,
                const char* ref_name) {
    if (da != dref)
        throw py::type_error(std::string(name) + " must have the same dtype as " + ref_name + " (" +
                             std::string(py::str(ref.dtype())) + "), got " + std::string(py::str(a.dtype())));
    bool same = a.ndim() == ref.ndim();
    for (py::ssize_t i = 0; same && i < a.ndim(); ++i) same = a.shape(i) == ref.shape(i);
    if (!same)
        throw py::value_error(std::string(name) + " must have the same shape as " + ref_name + " " +
                              shape_str(ref) + ", got " + shape_str(a));
}

void check_writeable(const py::array& a, const char* name) {
    if (!a.writeable()) throw py::value_error(std::string(name) + " must be writeable, got a read-only array");
}

/// Byte ranges of two contiguous arrays intersect.
bool overlaps(const py::array& a, const py::array& b) {
    if (a.nbytes() == 0 || b.nbytes() == 0) return false;
    const auto pa = reinterpret_cast<uintptr_t>(a.data()), pb = reinterpret_cast<uintptr_t>(b.data());
    return pa < pb + uintptr_t(b.nbytes()) && pb < pa + uintptr_t(a.nbytes());
}

pygpt::GeluApprox parse_approximate(const py::object& obj) {
    if (!py::isinstance<py::str>(obj))
        throw py::type_error("approximate must be a str ('tanh' or 'none'), got " + type_name(obj));
    const std::string s = py::str(obj);
    if (s == "tanh") return pygpt::GeluApprox::Tanh;
    if (s == "none") return pygpt::GeluApprox::None;
    throw py::value_error("approximate must be 'tanh' or 'none', got '" + s + "'");
}

// gelu_forward(x, out, approximate="tanh") -> out ; out may be x itself (in place).
py::object gelu_forward(const py::object& x_obj, const py::object& out_obj, const py::object& approximate) {
    DType dx, dy;
    py::array x = checked_array(x_obj, "x", &dx);
    py::array out = checked_array(out_obj, "out", &dy);
    check_like(out, dy, "out", x, dx, "x");
    check_writeable(out, "out");
    const bool in_place = out.data() == x.data();
    if (!in_place && overlaps(out, x))
        throw py::value_error("out must not overlap x (pass x itself as out for an in-place call)");
    const pygpt::GeluApprox approx = parse_approximate(approximate);
    const int64_t n = static_cast<int64_t>(x.size());
    if (dx == DType::F32) {
        const auto* xp = static_cast<const float*>(x.data());
        auto* yp = static_cast<float*>(out.mutable_data());
        py::gil_scoped_release nogil;
        pygpt::gelu_forward(xp, yp, n, approx);
    } else {
        const auto* xp = static_cast<const double*>(x.data());
        auto* yp = static_cast<double*>(out.mutable_data());
        py::gil_scoped_release nogil;
        pygpt::gelu_forward(xp, yp, n, approx);
    }
    return out_obj;
}

// gelu_backward(x, grad_out, grad_in, approximate="tanh") -> grad_in ; grad_in = f'(x) * grad_out.
py::object gelu_backward(const py::object& x_obj, const py::object& gout_obj, const py::object& gin_obj,
                         const py::object& approximate) {
    DType dx, dgo, dgi;
    py::array x = checked_array(x_obj, "x", &dx);
    py::array gout = checked_array(gout_obj, "grad_out", &dgo);
    py::array gin = checked_array(gin_obj, "grad_in", &dgi);
    check_like(gout, dgo, "grad_out", x, dx, "x");
    check_like(gin, dgi, "grad_in", x, dx, "x");
    check_writeable(gin, "grad_in");
    if (overlaps(gin, x)) throw py::value_error("grad_in must not overlap x");
    if (overlaps(gin, gout)) throw py::value_error("grad_in must not overlap grad_out");
    const pygpt::GeluApprox approx = parse_approximate(approximate);
    const int64_t n = static_cast<int64_t>(x.size());
    if (dx == DType::F32) {
        const auto* xp = static_cast<const float*>(x.data());
        const auto* gp = static_cast<const float*>(gout.data());
        auto* dp = static_cast<float*>(gin.mutable_data());
        py::gil_scoped_release nogil;
        pygpt::gelu_backward(xp, gp, dp, n, approx);
    } else {
        const auto* xp = static_cast<const double*>(x.data());
        const auto* gp = static_cast<const double*>(gout.data());
        auto* dp = static_cast<double*>(gin.mutable_data());
        py::gil_scoped_release nogil;
        pygpt::gelu_backward(xp, gp, dp, n, approx);
    }
    return gin_obj;
}

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
    return d;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "pygpt native kernels (C++/OpenMP). Thin bindings over cpp/include/pygpt; see pygpt.backend.";
    m.attr("__version__") = PYGPT_VERSION_STRING;

    m.def("build_info", &build_info,
          "How the extension was built: version, compiler, build_type, simd, openmp, max_threads, cuda.");
    m.def("num_threads", &pygpt::num_threads, "Threads the CPU kernels use (1 without OpenMP).");
    m.def("set_num_threads", &pygpt::set_num_threads, py::arg("n"),
          "Set the kernels' thread count (1 <= n <= 1024), process-wide.");

    m.def("gelu_forward", &gelu_forward, py::arg("x"), py::arg("out"), py::arg("approximate") = "tanh",
          R"doc(out = GELU(x), element-wise; returns out.

approximate='tanh': 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   (GPT-2)
approximate='none': x Phi(x) = 0.5 x (1 + erf(x / sqrt(2)))               (BERT)

x, out: numpy arrays of the same shape and dtype (float32 or float64), C-contiguous;
out writeable and either x itself (in place) or not overlapping x.)doc");
    m.def("gelu_backward", &gelu_backward, py::arg("x"), py::arg("grad_out"), py::arg("grad_in"),
          py::arg("approximate") = "tanh",
          R"doc(grad_in = GELU'(x) * grad_out, element-wise (overwrites grad_in); returns grad_in.

Same rules as gelu_forward; grad_in must overlap neither x nor grad_out.)doc");
}
