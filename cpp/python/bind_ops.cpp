// Bindings for the rest of the training step: LayerNorm, softmax cross-entropy, Adam/AdamW, embedding
// backward, dropout (cpp/include/pygpt/{layernorm,crossentropy,adamw,embedding,dropout}.h).
// Same rules as every binding (checks.h): buffers are checked, never converted or copied; the GIL is
// released around the kernel; id/target values out of range are a ValueError (checked in C++ before
// any memory is touched through them).
#include <pygpt/pygpt.h>

#include <vector>

#include "checks.h"

namespace pygpt_py {
namespace {

/// Run f(T{}) with T = float or double according to the dtype tag.
template <class F>
void with_dtype(DType d, F&& f) {
    if (d == DType::F32) f(float{});
    else f(double{});
}

template <class T>
const T* cptr(const py::array& a) {
    return static_cast<const T*>(a.data());
}
template <class T>
T* mptr(py::array& a) {
    return static_cast<T*>(a.mutable_data());
}

/// An int64 ndarray, C-contiguous, aligned, native byte order (else TypeError/ValueError).
py::array checked_int64(const py::object& obj, const char* name) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(name) + " must be a numpy.ndarray of int64, got " + type_name(obj));
    auto a = py::reinterpret_borrow<py::array>(obj);
    const py::dtype dt = a.dtype();
    if (dt.num() != py::dtype::of<int64_t>().num() || dt.itemsize() != 8)
        throw py::type_error(std::string(name) + " must have dtype int64, got " + std::string(py::str(dt)));
    if (!native_byte_order(dt.byteorder()))
        throw py::type_error(std::string(name) + " must have native byte order, got dtype " + std::string(py::str(dt)));
    if (!(a.flags() & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_))
        throw py::value_error(std::string(name) + " must be C-contiguous (use numpy.ascontiguousarray)");
    if (!(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
        throw py::value_error(std::string(name) + " must be aligned to its dtype");
    return a;
}

/// A float array with `ref`'s dtype and exactly `shape`.
py::array checked_shaped(const py::object& obj, const char* name, DType want, const py::array& ref,
                         const char* ref_name, const std::vector<py::ssize_t>& shape, const std::string& shape_doc) {
    DType d;
    py::array a = checked_array(obj, name, &d);
    if (d != want)
        throw py::type_error(std::string(name) + " must have the same dtype as " + ref_name + " (" +
                             std::string(py::str(ref.dtype())) + "), got " + std::string(py::str(a.dtype())));
    bool same = a.ndim() == py::ssize_t(shape.size());
    for (py::ssize_t i = 0; same && i < a.ndim(); ++i) same = a.shape(i) == shape[size_t(i)];
    if (!same) throw py::value_error(std::string(name) + " must have shape " + shape_doc + ", got " + shape_str(a));
    return a;
}

std::vector<py::ssize_t> shape_of(const py::array& a, py::ssize_t drop_last = 0) {
    std::vector<py::ssize_t> s;
    for (py::ssize_t i = 0; i + drop_last < a.ndim(); ++i) s.push_back(a.shape(i));
    return s;
}

std::string doc_of(const std::vector<py::ssize_t>& s) {
    std::string out = "(";
    for (size_t i = 0; i < s.size(); ++i) {
        out += std::to_string(s[i]);
        if (s.size() == 1 || i + 1 < s.size()) out += s.size() == 1 ? "," : ", ";
    }
    return out + ")";
}

/// Outputs must overlap no input and no other output.
void check_disjoint(std::initializer_list<std::pair<const char*, const py::array*>> outs,
                    std::initializer_list<std::pair<const char*, const py::array*>> ins) {
    std::vector<std::pair<const char*, const py::array*>> o(outs), i(ins);
    for (size_t a = 0; a < o.size(); ++a) {
        for (const auto& [iname, iarr] : i)
            if (overlaps(*o[a].second, *iarr))
                throw py::value_error(std::string(o[a].first) + " must not overlap " + iname);
        for (size_t b = a + 1; b < o.size(); ++b)
            if (overlaps(*o[a].second, *o[b].second))
                throw py::value_error(std::string(o[a].first) + " must not overlap " + o[b].first);
    }
}

// ------------------------------------------------------------------------------------------------ LayerNorm

py::object layer_norm_forward(const py::object& x_obj, const py::object& w_obj, const py::object& b_obj,
                              const py::object& out_obj, const py::object& mean_obj, const py::object& rstd_obj,
                              double eps) {
    DType dx;
    py::array x = checked_array(x_obj, "x", &dx);
    if (x.ndim() < 1 || x.shape(x.ndim() - 1) < 1)
        throw py::value_error("x must have at least one dimension and a last dimension >= 1, got shape " + shape_str(x));
    const py::ssize_t C = x.shape(x.ndim() - 1);
    const std::vector<py::ssize_t> cs{C}, rs = shape_of(x, 1), xs = shape_of(x);
    py::array w = checked_shaped(w_obj, "weight", dx, x, "x", cs, doc_of(cs));
    py::array b = checked_shaped(b_obj, "bias", dx, x, "x", cs, doc_of(cs));
    py::array out = checked_shaped(out_obj, "out", dx, x, "x", xs, "x.shape " + doc_of(xs));
    py::array mean = checked_shaped(mean_obj, "mean", dx, x, "x", rs, "x.shape[:-1] " + doc_of(rs));
    py::array rstd = checked_shaped(rstd_obj, "rstd", dx, x, "x", rs, "x.shape[:-1] " + doc_of(rs));
    for (auto [n, a] : {std::pair<const char*, py::array*>{"out", &out}, {"mean", &mean}, {"rstd", &rstd}})
        check_writeable(*a, n);
    check_disjoint({{"out", &out}, {"mean", &mean}, {"rstd", &rstd}}, {{"x", &x}, {"weight", &w}, {"bias", &b}});
    const int64_t rows = static_cast<int64_t>(x.size()) / C;
    with_dtype(dx, [&](auto tag) {
        using T = decltype(tag);
        const T *xp = cptr<T>(x), *wp = cptr<T>(w), *bp = cptr<T>(b);
        T *yp = mptr<T>(out), *mp = mptr<T>(mean), *sp = mptr<T>(rstd);
        py::gil_scoped_release nogil;
        pygpt::layernorm_forward(xp, wp, bp, yp, mp, sp, rows, C, eps);
    });
    return out_obj;
}

void layer_norm_backward(const py::object& x_obj, const py::object& w_obj, const py::object& mean_obj,
                         const py::object& rstd_obj, const py::object& gout_obj, const py::object& gin_obj,
                         const py::object& gw_obj, const py::object& gb_obj) {
    DType dx;
    py::array x = checked_array(x_obj, "x", &dx);
    if (x.ndim() < 1 || x.shape(x.ndim() - 1) < 1)
        throw py::value_error("x must have at least one dimension and a last dimension >= 1, got shape " + shape_str(x));
    const py::ssize_t C = x.shape(x.ndim() - 1);
    const std::vector<py::ssize_t> cs{C}, rs = shape_of(x, 1), xs = shape_of(x);
    py::array w = checked_shaped(w_obj, "weight", dx, x, "x", cs, doc_of(cs));
    py::array mean = checked_shaped(mean_obj, "mean", dx, x, "x", rs, "x.shape[:-1] " + doc_of(rs));
    py::array rstd = checked_shaped(rstd_obj, "rstd", dx, x, "x", rs, "x.shape[:-1] " + doc_of(rs));
    py::array gout = checked_shaped(gout_obj, "grad_out", dx, x, "x", xs, "x.shape " + doc_of(xs));
    py::array none_arr;
    py::array gin = gin_obj.is_none() ? none_arr : checked_shaped(gin_obj, "grad_in", dx, x, "x", xs, "x.shape " + doc_of(xs));
    py::array gw = gw_obj.is_none() ? none_arr : checked_shaped(gw_obj, "grad_weight", dx, x, "x", cs, doc_of(cs));
    py::array gb = gb_obj.is_none() ? none_arr : checked_shaped(gb_obj, "grad_bias", dx, x, "x", cs, doc_of(cs));
    std::vector<std::pair<const char*, const py::array*>> outs;
    if (!gin_obj.is_none()) outs.push_back({"grad_in", &gin});
    if (!gw_obj.is_none()) outs.push_back({"grad_weight", &gw});
    if (!gb_obj.is_none()) outs.push_back({"grad_bias", &gb});
    const std::pair<const char*, const py::array*> ins[] = {
        {"x", &x}, {"weight", &w}, {"mean", &mean}, {"rstd", &rstd}, {"grad_out", &gout}};
    for (size_t a = 0; a < outs.size(); ++a) {
        check_writeable(*outs[a].second, outs[a].first);
        for (const auto& [iname, iarr] : ins)
            if (overlaps(*outs[a].second, *iarr))
                throw py::value_error(std::string(outs[a].first) + " must not overlap " + iname);
        for (size_t b = a + 1; b < outs.size(); ++b)
            if (overlaps(*outs[a].second, *outs[b].second))
                throw py::value_error(std::string(outs[a].first) + " must not overlap " + outs[b].first);
    }
    const int64_t rows = static_cast<int64_t>(x.size()) / C;
    with_dtype(dx, [&](auto tag) {
        using T = decltype(tag);
        T* gi = gin_obj.is_none() ? nullptr : mptr<T>(gin);
        T* gwp = gw_obj.is_none() ? nullptr : mptr<T>(gw);
        T* gbp = gb_obj.is_none() ? nullptr : mptr<T>(gb);
        const T *xp = cptr<T>(x), *wp = cptr<T>(w), *mp = cptr<T>(mean), *sp = cptr<T>(rstd), *gp = cptr<T>(gout);
        py::gil_scoped_release nogil;
        pygpt::layernorm_backward(xp, wp, mp, sp, gp, gi, gwp, gbp, rows, C);
    });
}

// ------------------------------------------------------------------------------------------------ cross-entropy

struct CeArgs {
    DType dt;
    py::array logits, targets;
    int64_t rows = 0, V = 0;
    std::vector<py::ssize_t> row_shape;
};

CeArgs ce_common(const py::object& logits_obj, const py::object& targets_obj) {
    CeArgs a;
    a.logits = checked_array(logits_obj, "logits", &a.dt);
    if (a.logits.ndim() < 1 || a.logits.shape(a.logits.ndim() - 1) < 1)
        throw py::value_error("logits must have at least one dimension and a last dimension (V) >= 1, got shape " +
                              shape_str(a.logits));
    a.V = a.logits.shape(a.logits.ndim() - 1);
    a.row_shape = shape_of(a.logits, 1);
    a.targets = checked_int64(targets_obj, "targets");
    bool same = a.targets.ndim() == py::ssize_t(a.row_shape.size());
    for (py::ssize_t i = 0; same && i < a.targets.ndim(); ++i) same = a.targets.shape(i) == a.row_shape[size_t(i)];
    if (!same)
        throw py::value_error("targets must have shape logits.shape[:-1] " + doc_of(a.row_shape) + ", got " +
                              shape_str(a.targets));
    a.rows = static_cast<int64_t>(a.logits.size()) / a.V;
    return a;
}

void cross_entropy_forward(const py::object& logits_obj, const py::object& targets_obj, const py::object& loss_obj,
                           const py::object& lse_obj, int64_t ignore_index) {
    CeArgs a = ce_common(logits_obj, targets_obj);
    const std::string rdoc = "logits.shape[:-1] " + doc_of(a.row_shape);
    py::array loss = checked_shaped(loss_obj, "loss", a.dt, a.logits, "logits", a.row_shape, rdoc);
    py::array lse = checked_shaped(lse_obj, "lse", a.dt, a.logits, "logits", a.row_shape, rdoc);
    check_writeable(loss, "loss");
    check_writeable(lse, "lse");
    check_disjoint({{"loss", &loss}, {"lse", &lse}}, {{"logits", &a.logits}, {"targets", &a.targets}});
    with_dtype(a.dt, [&](auto tag) {
        using T = decltype(tag);
        const T* z = cptr<T>(a.logits);
        const int64_t* t = static_cast<const int64_t*>(a.targets.data());
        T *lp = mptr<T>(loss), *sp = mptr<T>(lse);
        py::gil_scoped_release nogil;
        pygpt::cross_entropy_forward(z, t, lp, sp, a.rows, a.V, ignore_index);
    });
}

py::object cross_entropy_backward(const py::object& logits_obj, const py::object& targets_obj,
                                  const py::object& lse_obj, const py::object& grad_obj, double scale,
                                  const py::object& row_scale_obj, int64_t ignore_index) {
    CeArgs a = ce_common(logits_obj, targets_obj);
    const std::string rdoc = "logits.shape[:-1] " + doc_of(a.row_shape);
    py::array lse = checked_shaped(lse_obj, "lse", a.dt, a.logits, "logits", a.row_shape, rdoc);
    const std::vector<py::ssize_t> ls = shape_of(a.logits);
    py::array grad = checked_shaped(grad_obj, "grad_logits", a.dt, a.logits, "logits", ls, "logits.shape " + doc_of(ls));
    check_writeable(grad, "grad_logits");
    py::array row_scale;
    const bool has_rs = !row_scale_obj.is_none();
    if (has_rs) row_scale = checked_shaped(row_scale_obj, "row_scale", a.dt, a.logits, "logits", a.row_shape, rdoc);
    const bool in_place = grad.data() == a.logits.data();
    if (!in_place && overlaps(grad, a.logits))
        throw py::value_error("grad_logits must not overlap logits (pass logits itself as grad_logits for an in-place call)");
    if (overlaps(grad, a.targets)) throw py::value_error("grad_logits must not overlap targets");
    if (overlaps(grad, lse)) throw py::value_error("grad_logits must not overlap lse");
    if (has_rs && overlaps(grad, row_scale)) throw py::value_error("grad_logits must not overlap row_scale");
    with_dtype(a.dt, [&](auto tag) {
        using T = decltype(tag);
        const T* z = cptr<T>(a.logits);
        const int64_t* t = static_cast<const int64_t*>(a.targets.data());
        const T* sp = cptr<T>(lse);
        const T* rsp = has_rs ? cptr<T>(row_scale) : nullptr;
        T* d = mptr<T>(grad);
        const T s = static_cast<T>(scale);
        py::gil_scoped_release nogil;
        pygpt::cross_entropy_backward(z, t, sp, rsp, s, d, a.rows, a.V, ignore_index);
    });
    return grad_obj;
}

// cross_entropy_fused(logits, targets, loss, lse, scale, ignore_index): forward + backward in place
void cross_entropy_fused(const py::object& logits_obj, const py::object& targets_obj, const py::object& loss_obj,
                         const py::object& lse_obj, double scale, int64_t ignore_index) {
    CeArgs a = ce_common(logits_obj, targets_obj);
    const std::string rdoc = "logits.shape[:-1] " + doc_of(a.row_shape);
    py::array loss = checked_shaped(loss_obj, "loss", a.dt, a.logits, "logits", a.row_shape, rdoc);
    py::array lse = checked_shaped(lse_obj, "lse", a.dt, a.logits, "logits", a.row_shape, rdoc);
    check_writeable(a.logits, "logits");
    check_writeable(loss, "loss");
    check_writeable(lse, "lse");
    check_disjoint({{"logits", &a.logits}, {"loss", &loss}, {"lse", &lse}}, {{"targets", &a.targets}});
    with_dtype(a.dt, [&](auto tag) {
        using T = decltype(tag);
        T* z = mptr<T>(a.logits);
        const int64_t* t = static_cast<const int64_t*>(a.targets.data());
        T *lp = mptr<T>(loss), *sp = mptr<T>(lse);
        const T s = static_cast<T>(scale);
        py::gil_scoped_release nogil;
        pygpt::cross_entropy_fused(z, t, lp, sp, s, a.rows, a.V, ignore_index);
    });
}

// ------------------------------------------------------------------------------------------------ Adam / AdamW

void adam_update(const py::object& p_obj, const py::object& g_obj, const py::object& m_obj, const py::object& v_obj,
                 double decay, double l2, double one_minus_beta1, double beta2, double one_minus_beta2,
                 double bias_correction2_sqrt, double eps, double step_size) {
    DType dp, dg, dm, dv;
    py::array p = checked_array(p_obj, "param", &dp);
    py::array g = checked_array(g_obj, "grad", &dg);
    py::array m = checked_array(m_obj, "exp_avg", &dm);
    py::array v = checked_array(v_obj, "exp_avg_sq", &dv);
    check_like(g, dg, "grad", p, dp, "param");
    check_like(m, dm, "exp_avg", p, dp, "param");
    check_like(v, dv, "exp_avg_sq", p, dp, "param");
    check_writeable(p, "param");
    check_writeable(m, "exp_avg");
    check_writeable(v, "exp_avg_sq");
    check_disjoint({{"param", &p}, {"exp_avg", &m}, {"exp_avg_sq", &v}}, {{"grad", &g}});
    pygpt::AdamStep s;
    s.decay = decay;
    s.l2 = l2;
    s.one_minus_beta1 = one_minus_beta1;
    s.beta2 = beta2;
    s.one_minus_beta2 = one_minus_beta2;
    s.bias_correction2_sqrt = bias_correction2_sqrt;
    s.eps = eps;
    s.step_size = step_size;
    const int64_t n = static_cast<int64_t>(p.size());
    with_dtype(dp, [&](auto tag) {
        using T = decltype(tag);
        T *pp = mptr<T>(p), *mp = mptr<T>(m), *vp = mptr<T>(v);
        const T* gp = cptr<T>(g);
        py::gil_scoped_release nogil;
        pygpt::adam_update(pp, gp, mp, vp, n, s);
    });
}

// ------------------------------------------------------------------------------------------------ embedding

py::object embedding_backward(const py::object& ids_obj, const py::object& gout_obj, const py::object& gw_obj) {
    py::array ids = checked_int64(ids_obj, "ids");
    DType dw;
    py::array gw = checked_array(gw_obj, "grad_weight", &dw);
    if (gw.ndim() != 2) throw py::value_error("grad_weight must be 2-D (V, C), got shape " + shape_str(gw));
    const py::ssize_t V = gw.shape(0), C = gw.shape(1);
    std::vector<py::ssize_t> gs = shape_of(ids);
    gs.push_back(C);
    py::array gout = checked_shaped(gout_obj, "grad_out", dw, gw, "grad_weight", gs, "ids.shape + (C,) " + doc_of(gs));
    check_writeable(gw, "grad_weight");
    check_disjoint({{"grad_weight", &gw}}, {{"ids", &ids}, {"grad_out", &gout}});
    const int64_t n = static_cast<int64_t>(ids.size());
    with_dtype(dw, [&](auto tag) {
        using T = decltype(tag);
        const int64_t* ip = static_cast<const int64_t*>(ids.data());
        const T* gp = cptr<T>(gout);
        T* wp = mptr<T>(gw);
        py::gil_scoped_release nogil;
        pygpt::embedding_backward(ip, gp, wp, n, V, C);
    });
    return gw_obj;
}

// ------------------------------------------------------------------------------------------------ dropout

py::object dropout(const py::object& x_obj, const py::object& out_obj, uint64_t key, uint64_t threshold, double scale,
                   uint64_t offset) {
    DType dx, dy;
    py::array x = checked_array(x_obj, "x", &dx);
    py::array out = checked_array(out_obj, "out", &dy);
    check_like(out, dy, "out", x, dx, "x");
    check_writeable(out, "out");
    if (out.data() != x.data() && overlaps(out, x))
        throw py::value_error("out must not overlap x (pass x itself as out for an in-place call)");
    const int64_t n = static_cast<int64_t>(x.size());
    with_dtype(dx, [&](auto tag) {
        using T = decltype(tag);
        const T* xp = cptr<T>(x);
        T* yp = mptr<T>(out);
        const T s = static_cast<T>(scale);
        py::gil_scoped_release nogil;
        pygpt::dropout_apply(xp, yp, n, key, threshold, s, offset);
    });
    return out_obj;
}

}  // namespace

void bind_ops(py::module_& m) {
    m.def("layer_norm_forward", &layer_norm_forward, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("out"),
          py::arg("mean"), py::arg("rstd"), py::arg("eps") = 1e-5,
          R"doc(LayerNorm over the last axis of x (..., C); writes out (x.shape) and mean, rstd (x.shape[:-1]).

out = ((x - mean) * rstd) * weight + bias,  rstd = 1 / sqrt(var + eps).  Returns out.
All arrays float32 or float64 (one dtype), C-contiguous; outputs writeable, overlapping no input.)doc");
    m.def("layer_norm_backward", &layer_norm_backward, py::arg("x"), py::arg("weight"), py::arg("mean"),
          py::arg("rstd"), py::arg("grad_out"), py::arg("grad_in") = py::none(), py::arg("grad_weight") = py::none(),
          py::arg("grad_bias") = py::none(),
          R"doc(LayerNorm backward from (x, weight, mean, rstd) of layer_norm_forward and grad_out.

Overwrites grad_in (x.shape), grad_weight and grad_bias ((C,)); pass None to skip one.)doc");
    m.def("cross_entropy_forward", &cross_entropy_forward, py::arg("logits"), py::arg("targets"), py::arg("loss"),
          py::arg("lse"), py::arg("ignore_index") = -100,
          R"doc(Per-row softmax cross-entropy of logits (..., V) against int64 targets (...).

Writes lse = logsumexp(logits, -1) and loss = lse - logits[target] (0 where target == ignore_index),
both of shape logits.shape[:-1]. A target outside [0, V) other than ignore_index is a ValueError.)doc");
    m.def("cross_entropy_backward", &cross_entropy_backward, py::arg("logits"), py::arg("targets"), py::arg("lse"),
          py::arg("grad_logits"), py::arg("scale") = 1.0, py::arg("row_scale") = py::none(),
          py::arg("ignore_index") = -100,
          R"doc(grad_logits = (softmax(logits) - onehot(targets)) * scale * row_scale[..., None], in one pass.

lse from cross_entropy_forward; row_scale (logits.shape[:-1]) or None; rows whose target is
ignore_index get zeros. grad_logits may be logits itself (in place). Returns grad_logits.)doc");
    m.def("cross_entropy_fused", &cross_entropy_fused, py::arg("logits"), py::arg("targets"), py::arg("loss"),
          py::arg("lse"), py::arg("scale") = 1.0, py::arg("ignore_index") = -100,
          R"doc(cross_entropy_forward and cross_entropy_backward(in place) in one pass per row.

Writes loss and lse (logits.shape[:-1]) exactly as cross_entropy_forward, then overwrites logits with
(softmax(logits) - onehot(targets)) * scale (zero rows where target == ignore_index). exp is evaluated
once per element. logits must be writeable; loss and lse must overlap nothing.)doc");
    m.def("adam_update", &adam_update, py::arg("param"), py::arg("grad"), py::arg("exp_avg"), py::arg("exp_avg_sq"),
          py::kw_only(), py::arg("decay"), py::arg("l2"), py::arg("one_minus_beta1"), py::arg("beta2"),
          py::arg("one_minus_beta2"), py::arg("bias_correction2_sqrt"), py::arg("eps"), py::arg("step_size"),
          R"doc(One Adam/AdamW step in place on param, exp_avg, exp_avg_sq (torch's operation order).

p *= decay (if != 1); g' = g + l2 p (if l2 != 0); m += (g' - m)(1 - b1); v = v b2 + ((1 - b2) g') g';
p -= (step_size m) / (sqrt(v) / bias_correction2_sqrt + eps). Four arrays of one shape and dtype.)doc");
    m.def("embedding_backward", &embedding_backward, py::arg("ids"), py::arg("grad_out"), py::arg("grad_weight"),
          R"doc(grad_weight[ids[i]] += grad_out[i] for every i, repeated ids accumulated in order.

ids int64 (any shape), grad_out ids.shape + (C,), grad_weight (V, C); ids outside [0, V) are a
ValueError (nothing is written). Returns grad_weight.)doc");
    m.def("dropout", &dropout, py::arg("x"), py::arg("out"), py::arg("key"), py::arg("threshold"), py::arg("scale"),
          py::arg("offset") = 0,
          R"doc(out = x * (keep ? scale : 0) with pygpt.random's counter-based mask; returns out.

keep_i = (mix64(mix64(key) + (offset + i + 1) * 0x9E3779B97F4A7C15) >> 32) >= threshold, with
threshold = round(p * 2**32) <= 2**32. out may be x itself (in place).)doc");
}

}  // namespace pygpt_py
