// Bindings for GELU (cpp/include/pygpt/gelu.h).
#include <pygpt/pygpt.h>

#include "checks.h"

namespace pygpt_py {
namespace {

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

}  // namespace

void bind_gelu(py::module_& m) {
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

}  // namespace pygpt_py
