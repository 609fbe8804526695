// Bindings for the CUDA kernels (cpp/include/pygpt/cuda.h): the submodule pygpt._C.cuda, present
// only in builds with CUDA (build_info()["cuda_kernels"] lists what it holds).
//
// Arrays are any objects with __cuda_array_interface__ (CuPy arrays, and others); the binding reads
// pointer, shape, strides, dtype and read-only flag from it and applies the rules of the NumPy
// bindings (checks.h): exact dtype, C-contiguous (attention operands: strided, last dim contiguous),
// aligned, outputs writeable and not overlapping inputs; nothing is converted or copied. Wrong
// Python type or dtype -> TypeError, wrong shape/layout/value -> ValueError. Only then the device:
// none usable -> RuntimeError ("... no CUDA device is usable here ..."); each pointer must be device
// memory of the current device and lie inside its allocation (ValueError otherwise). Kernels launch
// asynchronously on `stream` (an int: cupy.cuda.get_current_stream().ptr; 0 = the legacy default
// stream), with the GIL released; CUDA errors -> RuntimeError.
#include <pygpt/pygpt.h>

#include "checks.h"

#if defined(PYGPT_WITH_CUDA)
#include <pygpt/cuda.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace pygpt_py {
namespace {

namespace cu = pygpt::PYGPT_CUDA_NAMESPACE;  // pygpt::cuda (pygpt::cuda_emu in the CPU-emulation test build)

/// One array seen through __cuda_array_interface__.
struct Dev {
    py::object obj;
    const char* name = "";
    uintptr_t ptr = 0;
    std::vector<int64_t> shape, strides;  // strides in bytes
    char kind = 0;                         // 'f', 'i', 'u', 'b', ...
    int64_t item = 0;
    std::string typestr;
    bool readonly = false;
    int64_t size = 1;

    bool contiguous() const {
        int64_t want = item;
        for (size_t i = shape.size(); i-- > 0;) {
            if (shape[i] > 1 && strides[i] != want) return false;
            want *= shape[i];
        }
        return true;
    }
    /// [lo, hi) bytes the array can touch (non-negative strides); empty for size 0.
    std::pair<uintptr_t, uintptr_t> range() const {
        if (size == 0) return {ptr, ptr};
        uintptr_t span = uintptr_t(item);
        for (size_t i = 0; i < shape.size(); ++i)
            if (shape[i] > 1) span += uintptr_t(shape[i] - 1) * uintptr_t(strides[i]);
        return {ptr, ptr + span};
    }
    std::string shape_str() const {
        std::string s = "(";
        for (size_t i = 0; i < shape.size(); ++i) {
            s += std::to_string(shape[i]);
            if (shape.size() == 1 || i + 1 < shape.size()) s += shape.size() == 1 ? "," : ", ";
        }
        return s + ")";
    }
    void* data() const { return reinterpret_cast<void*>(ptr); }
};

bool little_endian() {
    const uint16_t probe = 1;
    return *reinterpret_cast<const uint8_t*>(&probe) == 1;
}

int64_t as_int(const py::handle& h, const std::string& what) {
    if (!PyIndex_Check(h.ptr()) || py::isinstance<py::bool_>(h))
        throw py::value_error(what + " must be an int, got " + type_name(h));
    return h.cast<int64_t>();
}

Dev device_array(const py::object& obj, const char* name) {
    if (obj.is_none() || !py::hasattr(obj, "__cuda_array_interface__"))
        throw py::type_error(std::string(name) +
                             " must be a CUDA array (cupy.ndarray or an object with __cuda_array_interface__), got " +
                             type_name(obj));
    const py::object cai_obj = obj.attr("__cuda_array_interface__");
    if (!py::isinstance<py::dict>(cai_obj))
        throw py::type_error(std::string(name) + ".__cuda_array_interface__ must be a dict");
    const py::dict cai = py::reinterpret_borrow<py::dict>(cai_obj);
    const std::string what = std::string(name) + ".__cuda_array_interface__";
    Dev a;
    a.obj = obj;
    a.name = name;
    if (!cai.contains("shape") || !cai.contains("typestr") || !cai.contains("data"))
        throw py::value_error(what + " needs 'shape', 'typestr' and 'data'");
    if (cai.contains("mask") && !cai["mask"].is_none())
        throw py::value_error(std::string(name) + " is a masked CUDA array (not supported)");
    const py::object shape = cai["shape"];
    if (!py::isinstance<py::tuple>(shape)) throw py::value_error(what + "['shape'] must be a tuple");
    for (const auto& s : py::reinterpret_borrow<py::tuple>(shape)) {
        const int64_t n = as_int(s, what + "['shape'] entries");
        if (n < 0) throw py::value_error(what + "['shape'] has a negative size");
        a.shape.push_back(n);
        if (n != 0 && a.size > INT64_MAX / n) throw py::value_error(std::string(name) + " is too large");
        a.size *= n;
    }
    const py::object ts = cai["typestr"];
    if (!py::isinstance<py::str>(ts)) throw py::value_error(what + "['typestr'] must be a str");
    a.typestr = ts.cast<std::string>();
    if (a.typestr.size() < 3) throw py::value_error(what + "['typestr'] '" + a.typestr + "' is not a dtype");
    const char order = a.typestr[0];
    a.kind = a.typestr[1];
    try {
        a.item = std::stoll(a.typestr.substr(2));
    } catch (const std::exception&) {
        throw py::value_error(what + "['typestr'] '" + a.typestr + "' is not a dtype");
    }
    if (a.item < 1 || a.item > 64) throw py::value_error(what + "['typestr'] '" + a.typestr + "' is not a dtype");
    const bool native = order == '|' || order == '=' || order == (little_endian() ? '<' : '>');
    if (!native && a.item > 1)
        throw py::type_error(std::string(name) + " must have native byte order, got typestr '" + a.typestr + "'");
    const py::object data = cai["data"];
    if (!py::isinstance<py::tuple>(data) || py::len(data) != 2)
        throw py::value_error(what + "['data'] must be a (pointer, read_only) tuple");
    const py::tuple dt = py::reinterpret_borrow<py::tuple>(data);
    if (!PyIndex_Check(dt[0].ptr()) || py::isinstance<py::bool_>(dt[0]))
        throw py::value_error(what + "['data'][0] must be an int pointer");
    a.ptr = dt[0].cast<uintptr_t>();
    a.readonly = py::bool_(dt[1]);
    const py::object strides = cai.contains("strides") ? py::object(cai["strides"]) : py::object(py::none());
    a.strides.assign(a.shape.size(), 0);
    if (strides.is_none()) {
        int64_t st = a.item;
        for (size_t i = a.shape.size(); i-- > 0;) {
            a.strides[i] = st;
            st *= std::max<int64_t>(a.shape[i], 1);
        }
    } else {
        if (!py::isinstance<py::tuple>(strides) || py::len(strides) != a.shape.size())
            throw py::value_error(what + "['strides'] must be None or a tuple as long as the shape");
        size_t i = 0;
        for (const auto& s : py::reinterpret_borrow<py::tuple>(strides))
            a.strides[i++] = as_int(s, what + "['strides'] entries");
    }
    if (a.size > 0 && a.ptr == 0) throw py::value_error(std::string(name) + " has a null data pointer");
    return a;
}

DType float_dtype(const Dev& a) {
    if (a.kind == 'f' && a.item == 4) return DType::F32;
    if (a.kind == 'f' && a.item == 8) return DType::F64;
    throw py::type_error(std::string(a.name) + " must have dtype float32 or float64, got typestr '" + a.typestr + "'");
}

const char* dtype_name(DType d) { return d == DType::F32 ? "float32" : "float64"; }

/// A float32/float64 CUDA array, C-contiguous and aligned.
Dev float_array(const py::object& obj, const char* name, DType* dtype) {
    Dev a = device_array(obj, name);
    *dtype = float_dtype(a);
    if (!a.contiguous()) throw py::value_error(std::string(name) + " must be C-contiguous (use cupy.ascontiguousarray)");
    if (a.ptr % uintptr_t(a.item) != 0) throw py::value_error(std::string(name) + " must be aligned to its dtype");
    return a;
}

void same_dtype(const Dev& a, DType da, const Dev& ref, DType dref) {
    if (da != dref)
        throw py::type_error(std::string(a.name) + " must have the same dtype as " + ref.name + " (" + dtype_name(dref) +
                             "), got " + dtype_name(da));
}

void same_shape(const Dev& a, const std::vector<int64_t>& shape, const std::string& doc) {
    if (a.shape != shape) throw py::value_error(std::string(a.name) + " must have shape " + doc + ", got " + a.shape_str());
}

std::string doc_of(const std::vector<int64_t>& s) {
    std::string out = "(";
    for (size_t i = 0; i < s.size(); ++i) {
        out += std::to_string(s[i]);
        if (s.size() == 1 || i + 1 < s.size()) out += s.size() == 1 ? "," : ", ";
    }
    return out + ")";
}

Dev like(const py::object& obj, const char* name, const Dev& ref, DType dref) {
    DType d;
    Dev a = float_array(obj, name, &d);
    same_dtype(a, d, ref, dref);
    same_shape(a, ref.shape, std::string(ref.name) + ".shape " + ref.shape_str());
    return a;
}

Dev shaped(const py::object& obj, const char* name, const Dev& ref, DType dref, const std::vector<int64_t>& shape,
           const std::string& doc) {
    DType d;
    Dev a = float_array(obj, name, &d);
    same_dtype(a, d, ref, dref);
    same_shape(a, shape, doc);
    return a;
}

void writeable(const Dev& a) {
    if (a.readonly) throw py::value_error(std::string(a.name) + " must be writeable, got a read-only array");
}

bool overlap(const Dev& a, const Dev& b) {
    const auto [alo, ahi] = a.range();
    const auto [blo, bhi] = b.range();
    return alo < ahi && blo < bhi && alo < bhi && blo < ahi;
}

/// Outputs overlap no input and no other output.
void disjoint(std::initializer_list<const Dev*> outs, std::initializer_list<const Dev*> ins) {
    std::vector<const Dev*> o(outs);
    for (size_t i = 0; i < o.size(); ++i) {
        for (const Dev* in : ins)
            if (overlap(*o[i], *in)) throw py::value_error(std::string(o[i]->name) + " must not overlap " + in->name);
        for (size_t j = i + 1; j < o.size(); ++j)
            if (overlap(*o[i], *o[j]))
                throw py::value_error(std::string(o[i]->name) + " must not overlap " + o[j]->name);
    }
}

Dev int64_array(const py::object& obj, const char* name) {
    Dev a = device_array(obj, name);
    if (!(a.kind == 'i' && a.item == 8))
        throw py::type_error(std::string(name) + " must have dtype int64, got typestr '" + a.typestr + "'");
    if (!a.contiguous()) throw py::value_error(std::string(name) + " must be C-contiguous (use cupy.ascontiguousarray)");
    if (a.ptr % 8 != 0) throw py::value_error(std::string(name) + " must be aligned to its dtype");
    return a;
}

uintptr_t parse_stream(const py::object& s) {
    if (s.is_none()) return 0;
    if (!PyIndex_Check(s.ptr()) || py::isinstance<py::bool_>(s))
        throw py::type_error("stream must be an int (cupy.cuda.get_current_stream().ptr) or None, got " + type_name(s));
    try {
        return s.cast<uintptr_t>();
    } catch (const py::cast_error&) {
        throw py::value_error("stream must be a non-negative pointer value");
    }
}

cu::Stream as_stream(uintptr_t s) { return reinterpret_cast<cu::Stream>(s); }

/// The device checks, after every structural one: a usable device, and each array's memory on it.
void on_device(const char* fn, std::initializer_list<const Dev*> arrays) {
    cu::require_device(fn);
    for (const Dev* a : arrays) {
        if (a == nullptr || a->size == 0) continue;
        const auto [lo, hi] = a->range();
        cu::check_device_buffer(a->data(), hi - lo, fn, a->name);
    }
}

pygpt::GeluApprox parse_approximate(const py::object& obj) {
    if (!py::isinstance<py::str>(obj))
        throw py::type_error("approximate must be a str ('tanh' or 'none'), got " + type_name(obj));
    const std::string s = py::str(obj);
    if (s == "tanh") return pygpt::GeluApprox::Tanh;
    if (s == "none") return pygpt::GeluApprox::None;
    throw py::value_error("approximate must be 'tanh' or 'none', got '" + s + "'");
}

template <class F>
void with_dtype(DType d, F&& f) {
    if (d == DType::F32) f(float{});
    else f(double{});
}
template <class T>
T* ptr_of(const Dev& a) {
    return static_cast<T*>(a.data());
}

// ------------------------------------------------------------------------------------------ GELU
py::object gelu_forward(const py::object& x_obj, const py::object& out_obj, const py::object& approximate,
                        const py::object& stream) {
    const char* fn = "pygpt._C.cuda.gelu_forward";
    DType dx;
    const Dev x = float_array(x_obj, "x", &dx);
    const Dev out = like(out_obj, "out", x, dx);
    writeable(out);
    if (out.ptr != x.ptr && overlap(out, x))
        throw py::value_error("out must not overlap x (pass x itself as out for an in-place call)");
    const pygpt::GeluApprox approx = parse_approximate(approximate);
    const uintptr_t s = parse_stream(stream);
    on_device(fn, {&x, &out});
    with_dtype(dx, [&](auto tag) {
        using T = decltype(tag);
        py::gil_scoped_release nogil;
        cu::gelu_forward(ptr_of<const T>(x), ptr_of<T>(out), x.size, approx, as_stream(s));
    });
    return out_obj;
}

py::object gelu_backward(const py::object& x_obj, const py::object& gout_obj, const py::object& gin_obj,
                         const py::object& approximate, const py::object& stream) {
    const char* fn = "pygpt._C.cuda.gelu_backward";
    DType dx;
    const Dev x = float_array(x_obj, "x", &dx);
    const Dev gout = like(gout_obj, "grad_out", x, dx);
    const Dev gin = like(gin_obj, "grad_in", x, dx);
    writeable(gin);
    disjoint({&gin}, {&x, &gout});
    const pygpt::GeluApprox approx = parse_approximate(approximate);
    const uintptr_t s = parse_stream(stream);
    on_device(fn, {&x, &gout, &gin});
    with_dtype(dx, [&](auto tag) {
        using T = decltype(tag);
        py::gil_scoped_release nogil;
        cu::gelu_backward(ptr_of<const T>(x), ptr_of<const T>(gout), ptr_of<T>(gin), x.size, approx, as_stream(s));
    });
    return gin_obj;
}

// ------------------------------------------------------------------------------------------ LayerNorm
int64_t last_dim(const Dev& x) {
    if (x.shape.empty() || x.shape.back() < 1)
        throw py::value_error(std::string(x.name) + " must have at least one dimension and a last dimension >= 1, got shape " +
                              x.shape_str());
    return x.shape.back();
}

std::vector<int64_t> lead(const Dev& x) { return std::vector<int64_t>(x.shape.begin(), x.shape.end() - 1); }

py::object layer_norm_forward(const py::object& x_obj, const py::object& w_obj, const py::object& b_obj,
                              const py::object& out_obj, const py::object& mean_obj, const py::object& rstd_obj,
                              double eps, const py::object& stream) {
    const char* fn = "pygpt._C.cuda.layer_norm_forward";
    DType dx;
    const Dev x = float_array(x_obj, "x", &dx);
    const int64_t C = last_dim(x);
    const std::vector<int64_t> cs{C}, rs = lead(x);
    const Dev w = shaped(w_obj, "weight", x, dx, cs, doc_of(cs));
    const Dev b = shaped(b_obj, "bias", x, dx, cs, doc_of(cs));
    const Dev out = like(out_obj, "out", x, dx);
    const Dev mean = shaped(mean_obj, "mean", x, dx, rs, "x.shape[:-1] " + doc_of(rs));
    const Dev rstd = shaped(rstd_obj, "rstd", x, dx, rs, "x.shape[:-1] " + doc_of(rs));
    for (const Dev* a : {&out, &mean, &rstd}) writeable(*a);
    disjoint({&out, &mean, &rstd}, {&x, &w, &b});
    const uintptr_t s = parse_stream(stream);
    on_device(fn, {&x, &w, &b, &out, &mean, &rstd});
    const int64_t rows = x.size / C;
    with_dtype(dx, [&](auto tag) {
        using T = decltype(tag);
        py::gil_scoped_release nogil;
        cu::layernorm_forward(ptr_of<const T>(x), ptr_of<const T>(w), ptr_of<const T>(b), ptr_of<T>(out),
                              ptr_of<T>(mean), ptr_of<T>(rstd), rows, C, eps, as_stream(s));
    });
    return out_obj;
}

void layer_norm_backward(const py::object& x_obj, const py::object& w_obj, const py::object& mean_obj,
                         const py::object& rstd_obj, const py::object& gout_obj, const py::object& gin_obj,
                         const py::object& gw_obj, const py::object& gb_obj, const py::object& ws_obj,
                         const py::object& stream) {
    const char* fn = "pygpt._C.cuda.layer_norm_backward";
    DType dx;
    const Dev x = float_array(x_obj, "x", &dx);
    const int64_t C = last_dim(x);
    const std::vector<int64_t> cs{C}, rs = lead(x);
    const Dev w = shaped(w_obj, "weight", x, dx, cs, doc_of(cs));
    const Dev mean = shaped(mean_obj, "mean", x, dx, rs, "x.shape[:-1] " + doc_of(rs));
    const Dev rstd = shaped(rstd_obj, "rstd", x, dx, rs, "x.shape[:-1] " + doc_of(rs));
    const Dev gout = like(gout_obj, "grad_out", x, dx);
    Dev gin, gw, gb, ws;
    std::vector<const Dev*> outs;
    if (!gin_obj.is_none()) outs.push_back(&(gin = like(gin_obj, "grad_in", x, dx)));
    if (!gw_obj.is_none()) outs.push_back(&(gw = shaped(gw_obj, "grad_weight", x, dx, cs, doc_of(cs))));
    if (!gb_obj.is_none()) outs.push_back(&(gb = shaped(gb_obj, "grad_bias", x, dx, cs, doc_of(cs))));
    const int64_t rows = x.size / C;
    const size_t need = (gw_obj.is_none() && gb_obj.is_none()) ? 0 : cu::layernorm_backward_workspace_size(rows, C);
    if (need > 0) {
        if (ws_obj.is_none())
            throw py::value_error("workspace is required: a CUDA array of at least " + std::to_string(need) +
                                  " bytes (layer_norm_backward_workspace_size(rows, C))");
        ws = device_array(ws_obj, "workspace");
        if (!ws.contiguous()) throw py::value_error("workspace must be C-contiguous");
        if (uint64_t(ws.size) * uint64_t(ws.item) < need)
            throw py::value_error("workspace has " + std::to_string(ws.size * ws.item) + " bytes, needs " +
                                  std::to_string(need));
        if (ws.ptr % 8 != 0) throw py::value_error("workspace must be 8-byte aligned");
        outs.push_back(&ws);
    }
    const Dev* ins[] = {&x, &w, &mean, &rstd, &gout};
    for (size_t i = 0; i < outs.size(); ++i) {
        writeable(*outs[i]);
        for (const Dev* in : ins)
            if (overlap(*outs[i], *in))
                throw py::value_error(std::string(outs[i]->name) + " must not overlap " + in->name);
        for (size_t j = i + 1; j < outs.size(); ++j)
            if (overlap(*outs[i], *outs[j]))
                throw py::value_error(std::string(outs[i]->name) + " must not overlap " + outs[j]->name);
    }
    const uintptr_t s = parse_stream(stream);
    on_device(fn, {&x, &w, &mean, &rstd, &gout, gin_obj.is_none() ? nullptr : &gin,
                   gw_obj.is_none() ? nullptr : &gw, gb_obj.is_none() ? nullptr : &gb, need > 0 ? &ws : nullptr});
    with_dtype(dx, [&](auto tag) {
        using T = decltype(tag);
        T* gi = gin_obj.is_none() ? nullptr : ptr_of<T>(gin);
        T* gwp = gw_obj.is_none() ? nullptr : ptr_of<T>(gw);
        T* gbp = gb_obj.is_none() ? nullptr : ptr_of<T>(gb);
        void* wsp = need > 0 ? ws.data() : nullptr;
        py::gil_scoped_release nogil;
        cu::layernorm_backward(ptr_of<const T>(x), ptr_of<const T>(w), ptr_of<const T>(mean), ptr_of<const T>(rstd),
                               ptr_of<const T>(gout), gi, gwp, gbp, rows, C, wsp, need, as_stream(s));
    });
}

// ------------------------------------------------------------------------------------------ cross-entropy
struct Ce {
    Dev logits, targets;
    DType dt;
    int64_t rows = 0, V = 0;
    std::vector<int64_t> row_shape;
};

Ce ce_common(const py::object& logits_obj, const py::object& targets_obj) {
    Ce c;
    c.logits = float_array(logits_obj, "logits", &c.dt);
    if (c.logits.shape.empty() || c.logits.shape.back() < 1)
        throw py::value_error("logits must have at least one dimension and a last dimension (V) >= 1, got shape " +
                              c.logits.shape_str());
    c.V = c.logits.shape.back();
    c.row_shape = lead(c.logits);
    c.targets = int64_array(targets_obj, "targets");
    same_shape(c.targets, c.row_shape, "logits.shape[:-1] " + doc_of(c.row_shape));
    c.rows = c.logits.size / c.V;
    return c;
}

void cross_entropy_forward(const py::object& logits_obj, const py::object& targets_obj, const py::object& loss_obj,
                           const py::object& lse_obj, int64_t ignore_index, const py::object& stream) {
    const char* fn = "pygpt._C.cuda.cross_entropy_forward";
    const Ce c = ce_common(logits_obj, targets_obj);
    const std::string rdoc = "logits.shape[:-1] " + doc_of(c.row_shape);
    const Dev loss = shaped(loss_obj, "loss", c.logits, c.dt, c.row_shape, rdoc);
    const Dev lse = shaped(lse_obj, "lse", c.logits, c.dt, c.row_shape, rdoc);
    writeable(loss);
    writeable(lse);
    disjoint({&loss, &lse}, {&c.logits, &c.targets});
    const uintptr_t s = parse_stream(stream);
    on_device(fn, {&c.logits, &c.targets, &loss, &lse});
    with_dtype(c.dt, [&](auto tag) {
        using T = decltype(tag);
        py::gil_scoped_release nogil;
        cu::cross_entropy_forward(ptr_of<const T>(c.logits), ptr_of<const int64_t>(c.targets), ptr_of<T>(loss),
                                  ptr_of<T>(lse), c.rows, c.V, ignore_index, as_stream(s));
    });
}

py::object cross_entropy_backward(const py::object& logits_obj, const py::object& targets_obj,
                                  const py::object& lse_obj, const py::object& grad_obj, double scale,
                                  const py::object& row_scale_obj, int64_t ignore_index, const py::object& stream) {
    const char* fn = "pygpt._C.cuda.cross_entropy_backward";
    const Ce c = ce_common(logits_obj, targets_obj);
    const std::string rdoc = "logits.shape[:-1] " + doc_of(c.row_shape);
    const Dev lse = shaped(lse_obj, "lse", c.logits, c.dt, c.row_shape, rdoc);
    const Dev grad = like(grad_obj, "grad_logits", c.logits, c.dt);
    writeable(grad);
    Dev rs;
    const bool has_rs = !row_scale_obj.is_none();
    if (has_rs) rs = shaped(row_scale_obj, "row_scale", c.logits, c.dt, c.row_shape, rdoc);
    if (grad.ptr != c.logits.ptr && overlap(grad, c.logits))
        throw py::value_error("grad_logits must not overlap logits (pass logits itself as grad_logits for an in-place call)");
    if (overlap(grad, c.targets)) throw py::value_error("grad_logits must not overlap targets");
    if (overlap(grad, lse)) throw py::value_error("grad_logits must not overlap lse");
    if (has_rs && overlap(grad, rs)) throw py::value_error("grad_logits must not overlap row_scale");
    const uintptr_t s = parse_stream(stream);
    on_device(fn, {&c.logits, &c.targets, &lse, &grad, has_rs ? &rs : nullptr});
    with_dtype(c.dt, [&](auto tag) {
        using T = decltype(tag);
        const T* rsp = has_rs ? ptr_of<const T>(rs) : nullptr;
        py::gil_scoped_release nogil;
        cu::cross_entropy_backward(ptr_of<const T>(c.logits), ptr_of<const int64_t>(c.targets), ptr_of<const T>(lse),
                                   rsp, static_cast<T>(scale), ptr_of<T>(grad), c.rows, c.V, ignore_index,
                                   as_stream(s));
    });
    return grad_obj;
}

// ------------------------------------------------------------------------------------------ dropout, Adam
py::object dropout(const py::object& x_obj, const py::object& out_obj, uint64_t key, uint64_t threshold, double scale,
                   uint64_t offset, const py::object& stream) {
    const char* fn = "pygpt._C.cuda.dropout";
    DType dx;
    const Dev x = float_array(x_obj, "x", &dx);
    const Dev out = like(out_obj, "out", x, dx);
    writeable(out);
    if (out.ptr != x.ptr && overlap(out, x))
        throw py::value_error("out must not overlap x (pass x itself as out for an in-place call)");
    if (threshold > (uint64_t(1) << 32)) throw py::value_error("threshold must be <= 2**32, got " + std::to_string(threshold));
    const uintptr_t s = parse_stream(stream);
    on_device(fn, {&x, &out});
    with_dtype(dx, [&](auto tag) {
        using T = decltype(tag);
        py::gil_scoped_release nogil;
        cu::dropout_apply(ptr_of<const T>(x), ptr_of<T>(out), x.size, key, threshold, static_cast<T>(scale), offset,
                          as_stream(s));
    });
    return out_obj;
}

void adam_update(const py::object& p_obj, const py::object& g_obj, const py::object& m_obj, const py::object& v_obj,
                 double decay, double l2, double one_minus_beta1, double beta2, double one_minus_beta2,
                 double bias_correction2_sqrt, double eps, double step_size, const py::object& stream) {
    const char* fn = "pygpt._C.cuda.adam_update";
    DType dp;
    const Dev p = float_array(p_obj, "param", &dp);
    const Dev g = like(g_obj, "grad", p, dp);
    const Dev m = like(m_obj, "exp_avg", p, dp);
    const Dev v = like(v_obj, "exp_avg_sq", p, dp);
    for (const Dev* a : {&p, &m, &v}) writeable(*a);
    disjoint({&p, &m, &v}, {&g});
    pygpt::AdamStep st;
    st.decay = decay;
    st.l2 = l2;
    st.one_minus_beta1 = one_minus_beta1;
    st.beta2 = beta2;
    st.one_minus_beta2 = one_minus_beta2;
    st.bias_correction2_sqrt = bias_correction2_sqrt;
    st.eps = eps;
    st.step_size = step_size;
    const uintptr_t s = parse_stream(stream);
    on_device(fn, {&p, &g, &m, &v});
    with_dtype(dp, [&](auto tag) {
        using T = decltype(tag);
        py::gil_scoped_release nogil;
        cu::adam_update(ptr_of<T>(p), ptr_of<const T>(g), ptr_of<T>(m), ptr_of<T>(v), p.size, st, as_stream(s));
    });
}

// ------------------------------------------------------------------------------------------ attention
/// A 4-D float32 (B, H, T, d) CUDA array read through its strides.
struct Op {
    Dev a;
    pygpt::AttentionStrides st{0, 0, 0};
};

Op operand(const py::object& obj, const char* name) {
    Op op;
    op.a = device_array(obj, name);
    const Dev& a = op.a;
    if (!(a.kind == 'f' && a.item == 4))
        throw py::type_error(std::string(name) + " must have dtype float32 (the CUDA attention kernel is float32 only), "
                             "got typestr '" + a.typestr + "'");
    if (a.shape.size() != 4) throw py::value_error(std::string(name) + " must be 4-D (B, H, T, d), got shape " + a.shape_str());
    if (a.ptr % 4 != 0) throw py::value_error(std::string(name) + " must be aligned to its dtype");
    if (a.size == 0) return op;
    int64_t st[4];
    for (int i = 0; i < 4; ++i) {
        const int64_t s = a.shape[size_t(i)] > 1 ? a.strides[size_t(i)] : 0;
        if (s < 0)
            throw py::value_error(std::string(name) + " must have non-negative strides, got " +
                                  std::to_string(a.strides[size_t(i)]) + " bytes in dimension " + std::to_string(i));
        if (s % 4 != 0) throw py::value_error(std::string(name) + " strides must be multiples of the item size (unaligned view)");
        st[i] = s / 4;
    }
    if (a.shape[3] > 1 && st[3] != 1)
        throw py::value_error(std::string(name) + " must be contiguous in its last dimension (stride " +
                              std::to_string(a.strides[3]) + " bytes, want 4)");
    op.st = {st[0], st[1], st[2]};
    return op;
}

void no_self_overlap(const Dev& a) {
    if (a.size == 0) return;
    std::vector<std::pair<int64_t, int64_t>> dims;
    for (size_t i = 0; i < a.shape.size(); ++i)
        if (a.shape[i] > 1) dims.emplace_back(a.strides[i], a.shape[i]);
    std::sort(dims.begin(), dims.end());
    int64_t span = a.item;
    for (const auto& [s, n] : dims) {
        if (s < span) throw py::value_error(std::string(a.name) + " has overlapping elements (strides that alias memory)");
        span = s * (n - 1) + span;
    }
}

double parse_real(const py::object& obj, const char* name) {
    if (py::isinstance<py::bool_>(obj) || PyComplex_Check(obj.ptr()) ||
        !(PyFloat_Check(obj.ptr()) || PyIndex_Check(obj.ptr()) || py::hasattr(obj, "__float__")))
        throw py::type_error(std::string(name) + " must be a float, got " + type_name(obj));
    const double v = PyFloat_AsDouble(obj.ptr());
    if (v == -1.0 && PyErr_Occurred()) throw py::error_already_set();
    return v;
}

uint64_t parse_u64(const py::object& obj, const char* name) {
    if (py::isinstance<py::bool_>(obj) || PyFloat_Check(obj.ptr()) || !PyIndex_Check(obj.ptr()))
        throw py::type_error(std::string(name) + " must be an int in [0, 2**64), got " + type_name(obj));
    const auto idx = py::reinterpret_steal<py::object>(PyNumber_Index(obj.ptr()));
    if (!idx) throw py::error_already_set();
    const unsigned long long v = PyLong_AsUnsignedLongLong(idx.ptr());
    if (v == ~0ull && PyErr_Occurred()) {
        PyErr_Clear();
        throw py::value_error(std::string(name) + " must be in [0, 2**64), got " + std::string(py::str(obj)));
    }
    return v;
}

struct AttnArgs {
    Op q, k, v, out;
    Dev lse, mask;
    bool has_mask = false;
    pygpt::AttentionShape shape;
    pygpt::AttentionOptions opt;
};

void check_4d(const Dev& a, std::vector<int64_t> want, const char* what) {
    if (a.shape != want) throw py::value_error(std::string(a.name) + " must have shape " + doc_of(want) + " " + what +
                                               ", got " + a.shape_str());
}

AttnArgs attn_common(const py::object& q_obj, const py::object& k_obj, const py::object& v_obj,
                     const py::object& out_obj, const py::object& lse_obj, const py::object& causal,
                     const py::object& key_mask, const py::object& dropout_p, const py::object& dropout_key) {
    AttnArgs r;
    r.q = operand(q_obj, "q");
    r.k = operand(k_obj, "k");
    r.v = operand(v_obj, "v");
    r.out = operand(out_obj, "out");
    const int64_t B = r.q.a.shape[0], H = r.q.a.shape[1], Tq = r.q.a.shape[2], d = r.q.a.shape[3];
    const int64_t Tk = r.k.a.shape[2];
    check_4d(r.k.a, {B, H, Tk, d}, "(B, H, Tk, d) matching q");
    check_4d(r.v.a, {B, H, Tk, d}, "(B, H, Tk, d) matching k");
    check_4d(r.out.a, {B, H, Tq, d}, "(B, H, Tq, d) matching q");
    if (d < 1 || d > 256) throw py::value_error("head dim d must be in [1, 256], got " + std::to_string(d));
    DType dl;
    r.lse = float_array(lse_obj, "lse", &dl);
    if (dl != DType::F32) throw py::type_error(std::string("lse must have dtype float32, got ") + dtype_name(dl));
    same_shape(r.lse, {B, H, Tq}, "(B, H, Tq) " + doc_of({B, H, Tq}));
    if (!py::isinstance<py::bool_>(causal)) throw py::type_error("causal must be a bool, got " + type_name(causal));
    r.opt.causal = causal.cast<bool>();
    if (!key_mask.is_none()) {
        r.mask = device_array(key_mask, "key_mask");
        if (!(r.mask.kind == 'b' && r.mask.item == 1))
            throw py::type_error("key_mask must have dtype bool, got typestr '" + r.mask.typestr + "'");
        same_shape(r.mask, {B, Tk}, "(B, Tk) " + doc_of({B, Tk}));
        if (!r.mask.contiguous()) throw py::value_error("key_mask must be C-contiguous (use cupy.ascontiguousarray)");
        r.has_mask = true;
        r.opt.key_mask = static_cast<const uint8_t*>(r.mask.data());
    }
    r.opt.dropout_p = parse_real(dropout_p, "dropout_p");
    if (!(r.opt.dropout_p >= 0.0 && r.opt.dropout_p < 1.0))
        throw py::value_error("dropout_p must be in [0, 1), got " + std::string(py::str(dropout_p)));
    r.opt.dropout_key = parse_u64(dropout_key, "dropout_key");
    if (r.opt.causal && Tk < Tq)
        throw py::value_error("causal attention needs Tk >= Tq, got Tq=" + std::to_string(Tq) + ", Tk=" + std::to_string(Tk));
    r.shape = {B, H, Tq, Tk, d};
    return r;
}

py::object attention_forward(const py::object& q_obj, const py::object& k_obj, const py::object& v_obj,
                             const py::object& out_obj, const py::object& lse_obj, const py::object& causal,
                             const py::object& key_mask, const py::object& dropout_p, const py::object& dropout_key,
                             const py::object& stream) {
    const char* fn = "pygpt._C.cuda.attention_forward";
    const AttnArgs a = attn_common(q_obj, k_obj, v_obj, out_obj, lse_obj, causal, key_mask, dropout_p, dropout_key);
    writeable(a.out.a);
    writeable(a.lse);
    no_self_overlap(a.out.a);
    for (const Dev* in : {&a.q.a, &a.k.a, &a.v.a}) {
        if (overlap(a.out.a, *in)) throw py::value_error("out must not overlap q, k or v");
        if (overlap(a.lse, *in)) throw py::value_error("lse must not overlap q, k or v");
    }
    if (overlap(a.out.a, a.lse)) throw py::value_error("out must not overlap lse");
    if (a.has_mask && (overlap(a.mask, a.out.a) || overlap(a.mask, a.lse)))
        throw py::value_error("key_mask must not overlap out or lse");
    const uintptr_t s = parse_stream(stream);
    on_device(fn, {&a.q.a, &a.k.a, &a.v.a, &a.out.a, &a.lse, a.has_mask ? &a.mask : nullptr});
    {
        py::gil_scoped_release nogil;
        cu::attention_forward(a.shape, ptr_of<const float>(a.q.a), a.q.st, ptr_of<const float>(a.k.a), a.k.st,
                              ptr_of<const float>(a.v.a), a.v.st, ptr_of<float>(a.out.a), a.out.st,
                              ptr_of<float>(a.lse), a.opt, as_stream(s));
    }
    return out_obj;
}

py::object attention_backward(const py::object& q_obj, const py::object& k_obj, const py::object& v_obj,
                              const py::object& out_obj, const py::object& lse_obj, const py::object& gout_obj,
                              const py::object& gq_obj, const py::object& gk_obj, const py::object& gv_obj,
                              const py::object& causal, const py::object& key_mask, const py::object& dropout_p,
                              const py::object& dropout_key, const py::object& ws_obj, const py::object& stream) {
    const char* fn = "pygpt._C.cuda.attention_backward";
    const AttnArgs a = attn_common(q_obj, k_obj, v_obj, out_obj, lse_obj, causal, key_mask, dropout_p, dropout_key);
    const Op gout = operand(gout_obj, "grad_out"), gq = operand(gq_obj, "grad_q"), gk = operand(gk_obj, "grad_k"),
             gv = operand(gv_obj, "grad_v");
    const auto& sh = a.shape;
    check_4d(gout.a, {sh.batch, sh.heads, sh.q_len, sh.head_dim}, "(B, H, Tq, d) matching q");
    check_4d(gq.a, {sh.batch, sh.heads, sh.q_len, sh.head_dim}, "(B, H, Tq, d) matching q");
    check_4d(gk.a, {sh.batch, sh.heads, sh.k_len, sh.head_dim}, "(B, H, Tk, d) matching k");
    check_4d(gv.a, {sh.batch, sh.heads, sh.k_len, sh.head_dim}, "(B, H, Tk, d) matching k");
    const size_t need = cu::attention_backward_workspace_size(sh);
    Dev ws;
    if (need > 0) {
        if (ws_obj.is_none())
            throw py::value_error("workspace is required: a CUDA array of at least " + std::to_string(need) +
                                  " bytes (attention_backward_workspace_size)");
        ws = device_array(ws_obj, "workspace");
        if (!ws.contiguous()) throw py::value_error("workspace must be C-contiguous");
        if (uint64_t(ws.size) * uint64_t(ws.item) < need)
            throw py::value_error("workspace has " + std::to_string(ws.size * ws.item) + " bytes, needs " +
                                  std::to_string(need));
        if (ws.ptr % 4 != 0) throw py::value_error("workspace must be 4-byte aligned");
    }
    const Dev* outs[4] = {&gq.a, &gk.a, &gv.a, need > 0 ? &ws : nullptr};
    for (const Dev* g : outs) {
        if (g == nullptr) continue;
        writeable(*g);
        no_self_overlap(*g);
        for (const Dev* in : {&a.q.a, &a.k.a, &a.v.a, &a.out.a, &gout.a, &a.lse})
            if (overlap(*g, *in))
                throw py::value_error(std::string(g->name) + " must not overlap q, k, v, out, lse or grad_out");
        if (a.has_mask && overlap(*g, a.mask)) throw py::value_error(std::string(g->name) + " must not overlap key_mask");
    }
    for (int i = 0; i < 4; ++i)
        for (int j = i + 1; j < 4; ++j)
            if (outs[i] && outs[j] && overlap(*outs[i], *outs[j]))
                throw py::value_error(std::string(outs[i]->name) + " and " + outs[j]->name + " must not overlap");
    const uintptr_t s = parse_stream(stream);
    on_device(fn, {&a.q.a, &a.k.a, &a.v.a, &a.out.a, &a.lse, &gout.a, &gq.a, &gk.a, &gv.a,
                   a.has_mask ? &a.mask : nullptr, need > 0 ? &ws : nullptr});
    {
        py::gil_scoped_release nogil;
        cu::attention_backward(sh, ptr_of<const float>(a.q.a), a.q.st, ptr_of<const float>(a.k.a), a.k.st,
                               ptr_of<const float>(a.v.a), a.v.st, ptr_of<const float>(a.out.a), a.out.st,
                               ptr_of<const float>(a.lse), ptr_of<const float>(gout.a), gout.st,
                               ptr_of<float>(gq.a), gq.st, ptr_of<float>(gk.a), gk.st, ptr_of<float>(gv.a), gv.st,
                               a.opt, need > 0 ? ws.data() : nullptr, need, as_stream(s));
    }
    return py::make_tuple(gq_obj, gk_obj, gv_obj);
}

size_t ln_ws(int64_t rows, int64_t C) {
    if (rows < 0 || C < 1) throw py::value_error("rows must be >= 0 and C >= 1");
    return cu::layernorm_backward_workspace_size(rows, C);
}

size_t attn_ws(int64_t B, int64_t H, int64_t Tq) {
    if (B < 0 || H < 0 || Tq < 0) throw py::value_error("B, H and Tq must be >= 0");
    return cu::attention_backward_workspace_size({B, H, Tq, 0, 1});
}

}  // namespace

py::dict cuda_build_info() {
    const cu::Info i = cu::info();
    py::dict d;
    py::list kernels;
    for (const auto& k : i.kernels) kernels.append(k);
    py::list archs;
    std::string num;
    for (char c : i.architectures + ",") {
        if (c >= '0' && c <= '9') num += c;
        else if (!num.empty()) {
            archs.append(std::stoi(num));
            num.clear();
        }
    }
    d["cuda_kernels"] = kernels;
    d["cuda_architectures"] = archs;
    d["cuda_runtime"] = i.runtime_version;
    return d;
}

void bind_cuda(py::module_& m) {
    py::module_ c = m.def_submodule("cuda", "pygpt CUDA kernels on CUDA arrays (__cuda_array_interface__); see pygpt.cuda_kernels.");
    c.def("device_count", &cu::device_count, "Usable CUDA devices (0 when there is no device or driver).");
    c.def("gelu_forward", &gelu_forward, py::arg("x"), py::arg("out"), py::arg("approximate") = "tanh", py::kw_only(),
          py::arg("stream") = 0, "out = GELU(x) on the GPU (same rules as pygpt._C.gelu_forward); returns out.");
    c.def("gelu_backward", &gelu_backward, py::arg("x"), py::arg("grad_out"), py::arg("grad_in"),
          py::arg("approximate") = "tanh", py::kw_only(), py::arg("stream") = 0,
          "grad_in = GELU'(x) * grad_out on the GPU; returns grad_in.");
    c.def("layer_norm_forward", &layer_norm_forward, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("out"),
          py::arg("mean"), py::arg("rstd"), py::arg("eps") = 1e-5, py::kw_only(), py::arg("stream") = 0,
          "LayerNorm over the last axis on the GPU (as pygpt._C.layer_norm_forward); returns out.");
    c.def("layer_norm_backward", &layer_norm_backward, py::arg("x"), py::arg("weight"), py::arg("mean"),
          py::arg("rstd"), py::arg("grad_out"), py::arg("grad_in") = py::none(), py::arg("grad_weight") = py::none(),
          py::arg("grad_bias") = py::none(), py::kw_only(), py::arg("workspace") = py::none(), py::arg("stream") = 0,
          "LayerNorm backward on the GPU; grad_weight/grad_bias need `workspace` (layer_norm_backward_workspace_size bytes).");
    c.def("layer_norm_backward_workspace_size", &ln_ws, py::arg("rows"), py::arg("C"),
          "Bytes of workspace layer_norm_backward needs for grad_weight/grad_bias.");
    c.def("cross_entropy_forward", &cross_entropy_forward, py::arg("logits"), py::arg("targets"), py::arg("loss"),
          py::arg("lse"), py::arg("ignore_index") = -100, py::kw_only(), py::arg("stream") = 0,
          "Per-row softmax cross-entropy on the GPU (targets are not range-checked on the host: a bad one gives NaN).");
    c.def("cross_entropy_backward", &cross_entropy_backward, py::arg("logits"), py::arg("targets"), py::arg("lse"),
          py::arg("grad_logits"), py::arg("scale") = 1.0, py::arg("row_scale") = py::none(),
          py::arg("ignore_index") = -100, py::kw_only(), py::arg("stream") = 0,
          "grad_logits = (softmax - onehot) * scale * row_scale on the GPU (may be logits itself); returns grad_logits.");
    c.def("dropout", &dropout, py::arg("x"), py::arg("out"), py::arg("key"), py::arg("threshold"), py::arg("scale"),
          py::arg("offset") = 0, py::kw_only(), py::arg("stream") = 0,
          "out = x * (keep ? scale : 0) with pygpt.random's mask on the GPU (bit-identical to the CPU); returns out.");
    c.def("adam_update", &adam_update, py::arg("param"), py::arg("grad"), py::arg("exp_avg"), py::arg("exp_avg_sq"),
          py::kw_only(), py::arg("decay"), py::arg("l2"), py::arg("one_minus_beta1"), py::arg("beta2"),
          py::arg("one_minus_beta2"), py::arg("bias_correction2_sqrt"), py::arg("eps"), py::arg("step_size"),
          py::arg("stream") = 0, "One Adam/AdamW step in place on the GPU (bit-identical to pygpt._C.adam_update).");
    c.def("attention_forward", &attention_forward, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"),
          py::arg("lse"), py::arg("causal") = true, py::arg("key_mask") = py::none(), py::arg("dropout_p") = 0.0,
          py::arg("dropout_key") = 0, py::kw_only(), py::arg("stream") = 0,
          "Fused attention forward on the GPU, float32 (as pygpt._C.attention_forward); returns out.");
    c.def("attention_backward", &attention_backward, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"),
          py::arg("lse"), py::arg("grad_out"), py::arg("grad_q"), py::arg("grad_k"), py::arg("grad_v"),
          py::arg("causal") = true, py::arg("key_mask") = py::none(), py::arg("dropout_p") = 0.0,
          py::arg("dropout_key") = 0, py::kw_only(), py::arg("workspace") = py::none(), py::arg("stream") = 0,
          "Fused attention backward on the GPU; needs `workspace` (attention_backward_workspace_size bytes); "
          "returns (grad_q, grad_k, grad_v).");
    c.def("attention_backward_workspace_size", &attn_ws, py::arg("B"), py::arg("H"), py::arg("Tq"),
          "Bytes of workspace attention_backward needs (B*H*Tq float32).");
}

}  // namespace pygpt_py

#else  // built without CUDA

namespace pygpt_py {
py::dict cuda_build_info() {
    py::dict d;
    d["cuda_kernels"] = py::list();
    d["cuda_architectures"] = py::list();
    d["cuda_runtime"] = py::none();
    return d;
}
void bind_cuda(py::module_&) {}
}  // namespace pygpt_py

#endif
