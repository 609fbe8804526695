// Shared buffer checks for the pygpt._C bindings (one bind_*.cpp per concern includes this).
//
// A binding only checks buffers (type, dtype, shape, C-contiguity, alignment, writability,
// overlap), releases the GIL, and calls the C++ API. Nothing is converted or copied: a
// float64 array is never silently turned into float32, a non-contiguous one never copied.
// Errors: wrong Python type or dtype -> TypeError; wrong shape/layout/value -> ValueError;
// C++ std::invalid_argument -> ValueError, std::runtime_error -> RuntimeError (pybind11).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

namespace pygpt_py {

namespace py = pybind11;

enum class DType { F32, F64 };

inline std::string type_name(const py::handle& obj) {
    return py::str(py::type::handle_of(obj).attr("__name__"));
}

inline std::string shape_str(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) {
        s += std::to_string(a.shape(i));
        if (a.ndim() == 1 || i + 1 < a.ndim()) s += a.ndim() == 1 ? "," : ", ";
    }
    return s + ")";
}

inline bool native_byte_order(char bo) {
    const uint16_t probe = 1;
    const bool little = *reinterpret_cast<const uint8_t*>(&probe) == 1;
    return bo == '=' || bo == '|' || bo == (little ? '<' : '>');
}

/// `obj` as an ndarray of float32/float64 that is C-contiguous and aligned (else TypeError/ValueError).
inline py::array checked_array(const py::object& obj, const char* name, DType* dtype) {
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

inline void check_like(const py::array& a, DType da, const char* name, const py::array& ref, DType dref,
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

inline void check_writeable(const py::array& a, const char* name) {
    if (!a.writeable()) throw py::value_error(std::string(name) + " must be writeable, got a read-only array");
}

/// Byte ranges of two contiguous arrays intersect.
inline bool overlaps(const py::array& a, const py::array& b) {
    if (a.nbytes() == 0 || b.nbytes() == 0) return false;
    const auto pa = reinterpret_cast<uintptr_t>(a.data()), pb = reinterpret_cast<uintptr_t>(b.data());
    return pa < pb + uintptr_t(b.nbytes()) && pb < pa + uintptr_t(a.nbytes());
}

// Each bind_*.cpp defines one of these; module.cpp calls them all.
void bind_gelu(py::module_& m);
void bind_ops(py::module_& m);
void bind_bpe(py::module_& m);
void bind_attention(py::module_& m);

}  // namespace pygpt_py
