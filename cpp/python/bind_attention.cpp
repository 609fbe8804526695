// Bindings for fused attention (cpp/include/pygpt/attention.h).
//
// q, k, v, out, grad_out, grad_q, grad_k, grad_v are 4-D (B, H, T, d) arrays read and written
// through their strides: non-negative, multiples of the item size, the last dimension contiguous
// (so views of a packed (B, T, 3, H, d) projection need no copy). lse (B, H, Tq) and key_mask
// (B, Tk) bool are C-contiguous. Nothing is converted or copied.
#include <pygpt/pygpt.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "checks.h"

namespace pygpt_py {
namespace {

/// A 4-D float32/float64 array read through strides; strides returned in elements.
struct Operand {
    py::array a;
    DType dtype = DType::F32;
    pygpt::AttentionStrides strides;
    const char* name = "";
};

Operand strided_operand(const py::object& obj, const char* name) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(name) + " must be a numpy.ndarray of float32 or float64, got " +
                             type_name(obj));
    Operand op;
    op.a = py::reinterpret_borrow<py::array>(obj);
    op.strides = {0, 0, 0};
    op.name = name;
    const py::array& a = op.a;
    const py::dtype dt = a.dtype();
    if (dt.num() == py::dtype::num_of<float>()) op.dtype = DType::F32;
    else if (dt.num() == py::dtype::num_of<double>()) op.dtype = DType::F64;
    else throw py::type_error(std::string(name) + " must have dtype float32 or float64, got " + std::string(py::str(dt)));
    if (!native_byte_order(dt.byteorder()))
        throw py::type_error(std::string(name) + " must have native byte order, got dtype " + std::string(py::str(dt)));
    if (a.ndim() != 4)
        throw py::value_error(std::string(name) + " must be 4-D (B, H, T, d), got shape " + shape_str(a));
    const py::ssize_t item = a.itemsize();
    if (reinterpret_cast<uintptr_t>(a.data()) % uintptr_t(item) != 0)
        throw py::value_error(std::string(name) + " must be aligned to its dtype");
    int64_t st[4] = {0, 0, 0, 0};
    if (a.size() == 0) return op;  // nothing is read or written: any strides
    for (int i = 0; i < 4; ++i) {
        const py::ssize_t s = a.shape(i) > 1 ? a.strides(i) : 0;  // a stride of a length-1 dim is never used
        if (s < 0)
            throw py::value_error(std::string(name) + " must have non-negative strides, got " +
                                  std::to_string(a.strides(i)) + " bytes in dimension " + std::to_string(i));
        if (s % item != 0)
            throw py::value_error(std::string(name) + " strides must be multiples of the item size (unaligned view)");
        st[i] = s / item;
    }
    if (a.shape(3) > 1 && st[3] != 1)
        throw py::value_error(std::string(name) + " must be contiguous in its last dimension (stride " +
                              std::to_string(a.strides(3)) + " bytes, want " + std::to_string(item) + ")");
    op.strides = {st[0], st[1], st[2]};
    return op;
}

/// [lo, hi) byte range an array can touch (non-negative strides); empty for size 0.
std::pair<uintptr_t, uintptr_t> byte_range(const py::array& a) {
    const auto lo = reinterpret_cast<uintptr_t>(a.data());
    if (a.size() == 0) return {lo, lo};
    uintptr_t span = uintptr_t(a.itemsize());
    for (py::ssize_t i = 0; i < a.ndim(); ++i)
        if (a.shape(i) > 1) span += uintptr_t(a.shape(i) - 1) * uintptr_t(a.strides(i));
    return {lo, lo + span};
}

bool ranges_overlap(const py::array& a, const py::array& b) {
    const auto [alo, ahi] = byte_range(a);
    const auto [blo, bhi] = byte_range(b);
    return alo < ahi && blo < bhi && alo < bhi && blo < ahi;
}

/// Whether two arrays may share memory. Disjoint byte ranges never do; besides those, one case is
/// recognised exactly: views with the same shape and strides, interleaved at a fixed offset, such as
/// the q, k, v slices of a (B, T, 3, H, d) buffer. With the dimensions sorted by stride, if for some
/// level k every stride above it is a multiple of the next one S, and the offset mod S leaves room
/// for the span of the dimensions up to k on both sides, no element of one lands on the other.
/// Anything else counts as overlapping (conservative).
bool may_overlap(const py::array& a, const py::array& b) {
    if (!ranges_overlap(a, b)) return false;
    if (a.ndim() != b.ndim() || a.itemsize() != b.itemsize()) return true;
    std::vector<std::pair<py::ssize_t, py::ssize_t>> dims;  // (stride, extent), extent > 1
    for (py::ssize_t i = 0; i < a.ndim(); ++i) {
        if (a.shape(i) != b.shape(i) || a.strides(i) != b.strides(i)) return true;
        if (a.strides(i) < 0) return true;
        if (a.shape(i) > 1) dims.emplace_back(a.strides(i), a.shape(i));
    }
    std::sort(dims.begin(), dims.end());
    const auto pa = reinterpret_cast<uintptr_t>(a.data()), pb = reinterpret_cast<uintptr_t>(b.data());
    const uintptr_t delta = pa > pb ? pa - pb : pb - pa;
    uintptr_t span = uintptr_t(a.itemsize());  // bytes covered by the dimensions below level k
    for (size_t k = 0; k < dims.size(); ++k) {
        const uintptr_t S = uintptr_t(dims[k].first);
        bool multiples = S > 0;
        for (size_t j = k + 1; j < dims.size() && multiples; ++j) multiples = uintptr_t(dims[j].first) % S == 0;
        const uintptr_t r = multiples ? delta % S : 0;
        if (multiples && r >= span && r + span <= S) return false;
        span += uintptr_t(dims[k].first) * uintptr_t(dims[k].second - 1);
    }
    return true;
}

/// An output's elements must be distinct memory: each dimension (by increasing stride) must step
/// over everything the smaller ones span.
void check_no_self_overlap(const py::array& a, const char* name) {
    if (a.size() == 0) return;
    std::vector<std::pair<py::ssize_t, py::ssize_t>> dims;  // (stride, extent)
    for (py::ssize_t i = 0; i < a.ndim(); ++i)
        if (a.shape(i) > 1) dims.emplace_back(a.strides(i), a.shape(i));
    std::sort(dims.begin(), dims.end());
    py::ssize_t span = a.itemsize();
    for (const auto& [s, n] : dims) {
        if (s < span)
            throw py::value_error(std::string(name) + " has overlapping elements (strides that alias memory)");
        span = s * (n - 1) + span;
    }
}

void check_shape(const py::array& a, const char* name, std::initializer_list<py::ssize_t> want, const char* what) {
    bool ok = a.ndim() == py::ssize_t(want.size());
    py::ssize_t i = 0;
    for (py::ssize_t w : want) ok = ok && a.shape(i++) == w;
    if (!ok) {
        std::string s = "(";
        i = 0;
        for (py::ssize_t w : want) s += (i++ ? ", " : "") + std::to_string(w);
        throw py::value_error(std::string(name) + " must have shape " + s + ") " + what + ", got " + shape_str(a));
    }
}

void check_dtype(const Operand& op, const Operand& ref) {
    if (op.dtype != ref.dtype)
        throw py::type_error(std::string(op.name) + " must have the same dtype as " + ref.name + " (" +
                             std::string(py::str(ref.a.dtype())) + "), got " + std::string(py::str(op.a.dtype())));
}

/// A real number (float, int, numpy scalar), not a bool.
double parse_real(const py::object& obj, const char* name) {
    if (py::isinstance<py::bool_>(obj) || PyComplex_Check(obj.ptr()) ||
        !(PyFloat_Check(obj.ptr()) || PyIndex_Check(obj.ptr()) || py::hasattr(obj, "__float__")))
        throw py::type_error(std::string(name) + " must be a float, got " + type_name(obj));
    const double v = PyFloat_AsDouble(obj.ptr());
    if (v == -1.0 && PyErr_Occurred()) throw py::error_already_set();
    return v;
}

/// An integer in [0, 2**64) (int or numpy integer), not a bool.
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

struct Options {
    pygpt::AttentionOptions opt;
    py::array mask;  // keeps the key_mask alive
};

Options parse_options(const py::object& causal, const py::object& key_mask, const py::object& dropout_p,
                      const py::object& dropout_key, py::ssize_t B, py::ssize_t Tk) {
    Options o;
    if (!py::isinstance<py::bool_>(causal)) throw py::type_error("causal must be a bool, got " + type_name(causal));
    o.opt.causal = causal.cast<bool>();
    if (!key_mask.is_none()) {
        if (!py::isinstance<py::array>(key_mask))
            throw py::type_error("key_mask must be None or a numpy.ndarray of bool, got " + type_name(key_mask));
        auto m = py::reinterpret_borrow<py::array>(key_mask);
        if (m.dtype().kind() != 'b')
            throw py::type_error("key_mask must have dtype bool, got " + std::string(py::str(m.dtype())));
        check_shape(m, "key_mask", {B, Tk}, "(B, Tk)");
        if (!(m.flags() & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_))
            throw py::value_error("key_mask must be C-contiguous (use numpy.ascontiguousarray)");
        o.mask = m;
        o.opt.key_mask = static_cast<const uint8_t*>(m.data());
    }
    o.opt.dropout_p = parse_real(dropout_p, "dropout_p");
    if (!(o.opt.dropout_p >= 0.0 && o.opt.dropout_p < 1.0))
        throw py::value_error("dropout_p must be in [0, 1), got " + std::string(py::str(dropout_p)));
    o.opt.dropout_key = parse_u64(dropout_key, "dropout_key");
    return o;
}

void check_head_dim(py::ssize_t d) {
    if (d < 1 || d > 256) throw py::value_error("head dim d must be in [1, 256], got " + std::to_string(d));
}

template <class T>
const T* cptr(const Operand& op) { return static_cast<const T*>(op.a.data()); }
template <class T>
T* mptr(const py::array& a) { return static_cast<T*>(const_cast<void*>(a.data())); }

// attention_forward(q, k, v, out, lse, causal=True, key_mask=None, dropout_p=0.0, dropout_key=0) -> out
py::object attention_forward(const py::object& q_obj, const py::object& k_obj, const py::object& v_obj,
                             const py::object& out_obj, const py::object& lse_obj, const py::object& causal,
                             const py::object& key_mask, const py::object& dropout_p, const py::object& dropout_key) {
    const Operand q = strided_operand(q_obj, "q"), k = strided_operand(k_obj, "k"), v = strided_operand(v_obj, "v");
    const Operand out = strided_operand(out_obj, "out");
    check_dtype(k, q);
    check_dtype(v, q);
    check_dtype(out, q);
    const py::ssize_t B = q.a.shape(0), H = q.a.shape(1), Tq = q.a.shape(2), d = q.a.shape(3), Tk = k.a.shape(2);
    check_shape(k.a, "k", {B, H, Tk, d}, "(B, H, Tk, d) matching q");
    check_shape(v.a, "v", {B, H, Tk, d}, "(B, H, Tk, d) matching k");
    check_shape(out.a, "out", {B, H, Tq, d}, "(B, H, Tq, d) matching q");
    check_head_dim(d);
    DType dl;
    py::array lse = checked_array(lse_obj, "lse", &dl);
    if (dl != q.dtype)
        throw py::type_error("lse must have the same dtype as q (" + std::string(py::str(q.a.dtype())) + "), got " +
                             std::string(py::str(lse.dtype())));
    check_shape(lse, "lse", {B, H, Tq}, "(B, H, Tq)");
    Options o = parse_options(causal, key_mask, dropout_p, dropout_key, B, Tk);
    if (o.opt.causal && Tk < Tq)
        throw py::value_error("causal attention needs Tk >= Tq, got Tq=" + std::to_string(Tq) + ", Tk=" + std::to_string(Tk));
    check_writeable(out.a, "out");
    check_writeable(lse, "lse");
    check_no_self_overlap(out.a, "out");
    for (const py::array* in : {&q.a, &k.a, &v.a}) {
        if (ranges_overlap(out.a, *in)) throw py::value_error("out must not overlap q, k or v");
        if (ranges_overlap(lse, *in)) throw py::value_error("lse must not overlap q, k or v");
    }
    if (ranges_overlap(out.a, lse)) throw py::value_error("out must not overlap lse");
    if (o.mask && (ranges_overlap(o.mask, out.a) || ranges_overlap(o.mask, lse)))
        throw py::value_error("key_mask must not overlap out or lse");

    const pygpt::AttentionShape shape{B, H, Tq, Tk, d};
    if (q.dtype == DType::F32) {
        py::gil_scoped_release nogil;
        pygpt::attention_forward(shape, cptr<float>(q), q.strides, cptr<float>(k), k.strides, cptr<float>(v),
                                 v.strides, mptr<float>(out.a), out.strides, mptr<float>(lse), o.opt);
    } else {
        py::gil_scoped_release nogil;
        pygpt::attention_forward(shape, cptr<double>(q), q.strides, cptr<double>(k), k.strides, cptr<double>(v),
                                 v.strides, mptr<double>(out.a), out.strides, mptr<double>(lse), o.opt);
    }
    return out_obj;
}

// attention_backward(q, k, v, out, lse, grad_out, grad_q, grad_k, grad_v, causal, key_mask, dropout_p,
//                    dropout_key) -> (grad_q, grad_k, grad_v)
py::object attention_backward(const py::object& q_obj, const py::object& k_obj, const py::object& v_obj,
                              const py::object& out_obj, const py::object& lse_obj, const py::object& gout_obj,
                              const py::object& gq_obj, const py::object& gk_obj, const py::object& gv_obj,
                              const py::object& causal, const py::object& key_mask, const py::object& dropout_p,
                              const py::object& dropout_key) {
    const Operand q = strided_operand(q_obj, "q"), k = strided_operand(k_obj, "k"), v = strided_operand(v_obj, "v");
    const Operand out = strided_operand(out_obj, "out"), gout = strided_operand(gout_obj, "grad_out");
    const Operand gq = strided_operand(gq_obj, "grad_q"), gk = strided_operand(gk_obj, "grad_k"),
                  gv = strided_operand(gv_obj, "grad_v");
    for (const Operand* op : {&k, &v, &out, &gout, &gq, &gk, &gv}) check_dtype(*op, q);
    const py::ssize_t B = q.a.shape(0), H = q.a.shape(1), Tq = q.a.shape(2), d = q.a.shape(3), Tk = k.a.shape(2);
    check_shape(k.a, "k", {B, H, Tk, d}, "(B, H, Tk, d) matching q");
    check_shape(v.a, "v", {B, H, Tk, d}, "(B, H, Tk, d) matching k");
    check_shape(out.a, "out", {B, H, Tq, d}, "(B, H, Tq, d) matching q");
    check_shape(gout.a, "grad_out", {B, H, Tq, d}, "(B, H, Tq, d) matching q");
    check_shape(gq.a, "grad_q", {B, H, Tq, d}, "(B, H, Tq, d) matching q");
    check_shape(gk.a, "grad_k", {B, H, Tk, d}, "(B, H, Tk, d) matching k");
    check_shape(gv.a, "grad_v", {B, H, Tk, d}, "(B, H, Tk, d) matching k");
    check_head_dim(d);
    DType dl;
    py::array lse = checked_array(lse_obj, "lse", &dl);
    if (dl != q.dtype)
        throw py::type_error("lse must have the same dtype as q (" + std::string(py::str(q.a.dtype())) + "), got " +
                             std::string(py::str(lse.dtype())));
    check_shape(lse, "lse", {B, H, Tq}, "(B, H, Tq)");
    Options o = parse_options(causal, key_mask, dropout_p, dropout_key, B, Tk);
    if (o.opt.causal && Tk < Tq)
        throw py::value_error("causal attention needs Tk >= Tq, got Tq=" + std::to_string(Tq) + ", Tk=" + std::to_string(Tk));
    const Operand* outs[3] = {&gq, &gk, &gv};
    for (const Operand* g : outs) {
        check_writeable(g->a, g->name);
        check_no_self_overlap(g->a, g->name);
        for (const py::array* in : {&q.a, &k.a, &v.a, &out.a, &gout.a, static_cast<const py::array*>(&lse)})
            if (ranges_overlap(g->a, *in))
                throw py::value_error(std::string(g->name) + " must not overlap q, k, v, out, lse or grad_out");
        if (o.mask && ranges_overlap(g->a, o.mask))
            throw py::value_error(std::string(g->name) + " must not overlap key_mask");
    }
    if (may_overlap(gq.a, gk.a) || may_overlap(gq.a, gv.a) || may_overlap(gk.a, gv.a))
        throw py::value_error("grad_q, grad_k and grad_v must not overlap each other");

    const pygpt::AttentionShape shape{B, H, Tq, Tk, d};
    if (q.dtype == DType::F32) {
        py::gil_scoped_release nogil;
        pygpt::attention_backward(shape, cptr<float>(q), q.strides, cptr<float>(k), k.strides, cptr<float>(v),
                                  v.strides, cptr<float>(out), out.strides, static_cast<const float*>(lse.data()),
                                  cptr<float>(gout), gout.strides, mptr<float>(gq.a), gq.strides, mptr<float>(gk.a),
                                  gk.strides, mptr<float>(gv.a), gv.strides, o.opt);
    } else {
        py::gil_scoped_release nogil;
        pygpt::attention_backward(shape, cptr<double>(q), q.strides, cptr<double>(k), k.strides, cptr<double>(v),
                                  v.strides, cptr<double>(out), out.strides, static_cast<const double*>(lse.data()),
                                  cptr<double>(gout), gout.strides, mptr<double>(gq.a), gq.strides,
                                  mptr<double>(gk.a), gk.strides, mptr<double>(gv.a), gv.strides, o.opt);
    }
    return py::make_tuple(gq_obj, gk_obj, gv_obj);
}

uint32_t dropout_bits(const py::object& key, const py::object& index) {
    const uint64_t k = parse_u64(key, "key"), i = parse_u64(index, "index");
    return pygpt::attention_dropout_bits(k, i);
}

}  // namespace

void bind_attention(py::module_& m) {
    m.def("attention_forward", &attention_forward, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"),
          py::arg("lse"), py::arg("causal") = true, py::arg("key_mask") = py::none(), py::arg("dropout_p") = 0.0,
          py::arg("dropout_key") = 0,
          R"doc(Fused softmax(q kᵀ/√d + mask) v with optional dropout on the probabilities; returns out.

q (B, H, Tq, d), k and v (B, H, Tk, d), out (B, H, Tq, d): float32 or float64 (one dtype), read and
written through their strides (non-negative, last dimension contiguous), d in [1, 256].
lse (B, H, Tq), C-contiguous, receives log Σ_j exp(s_ij) per row (+inf for a row with no allowed key).
causal: key j allowed for query i iff j <= i + (Tk - Tq) (needs Tk >= Tq).
key_mask: None or bool (B, Tk) C-contiguous, True = attend. Rows with no allowed key give 0.
dropout_p in [0, 1), dropout_key in [0, 2**64): element ((b H + h) Tq + i) Tk + j is kept iff
dropout_bits(dropout_key, element) >= round(dropout_p 2**32) (pygpt.random); kept values scaled 1/(1-p).
out and lse are overwritten and must not overlap the inputs.)doc");
    m.def("attention_backward", &attention_backward, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"),
          py::arg("lse"), py::arg("grad_out"), py::arg("grad_q"), py::arg("grad_k"), py::arg("grad_v"),
          py::arg("causal") = true, py::arg("key_mask") = py::none(), py::arg("dropout_p") = 0.0,
          py::arg("dropout_key") = 0,
          R"doc(Gradients of attention_forward; returns (grad_q, grad_k, grad_v), all overwritten.

q, k, v, out, lse and the options as given to (and produced by) attention_forward; grad_out like out
(strided). grad_q like q, grad_k and grad_v like k, writeable, overlapping no input and each other.)doc");
    m.def("attention_dropout_bits", &dropout_bits, py::arg("key"), py::arg("index"),
          "The top 32 random bits of dropout element `index` for `key` (as pygpt.random.random_bits).");
}

}  // namespace pygpt_py
