// The CUDA kernels of cpp/cuda/ run on the CPU by the emulator (cpp/cuda/emulate.h), checked against
// the CPU kernels of the library, which are the tested references (tests/test_*native*.py):
//   * GELU (both forms, float/double, tails, unaligned views, in place) within a few ulp of the CPU
//     kernel, special values exactly;
//   * dropout and Adam bit-identical to the CPU kernels;
//   * LayerNorm forward/backward, cross-entropy forward/backward (ignore_index, row scale, in place,
//     extreme logits, out-of-range targets -> NaN) against the CPU kernels in double;
//   * attention forward/backward (float32) against the CPU kernel in double, on the CPU tests' shape
//     grid: causal and full, key masks with fully padded rows, dropout, packed (B, T, 3, H, d)
//     strided operands and a (B, T, H, d) strided output, odd head dims (element-wise loads);
//   * std::invalid_argument for bad arguments.
// What this cannot check is listed in emulate.h (timing, occupancy, resource limits, device math).
#include <pygpt/pygpt.h>

#include "pygpt/cuda.h"  // the emulated entry points: namespace pygpt::cuda_emu (PYGPT_CUDA_NAMESPACE)

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "check.h"

namespace emu = pygpt::cuda_emu;
using pygpt::GeluApprox;

template <class T>
static std::vector<T> randn(size_t n, unsigned seed, double scale = 1.0) {
    std::mt19937_64 g(seed);
    std::normal_distribution<double> d(0.0, scale);
    std::vector<T> v(n);
    for (auto& x : v) x = T(d(g));
    return v;
}

template <class T>
static bool same_bits(const T* a, const T* b, size_t n) {
    return n == 0 || std::memcmp(a, b, n * sizeof(T)) == 0;
}

static bool throws_invalid(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const std::invalid_argument&) {
        return true;
    } catch (...) {
        return false;
    }
    return false;
}

/// max |got - want| / max(floor, max |want|): relative to the largest value, or absolute below `floor`.
template <class A, class B>
static double scaled_err(const A* got, const B* want, size_t n, double floor) {
    double scale = floor, err = 0.0;
    for (size_t i = 0; i < n; ++i) scale = std::max(scale, std::fabs(double(want[i])));
    for (size_t i = 0; i < n; ++i) {
        const double d = std::fabs(double(got[i]) - double(want[i]));
        if (!(d <= err)) err = d;
    }
    return err / scale;
}

/// max |got - want| / max |want| (or max |got| when want is all zero).
template <class A, class B>
static double rel_err(const A* got, const B* want, size_t n) {
    double scale = 0.0, err = 0.0;
    for (size_t i = 0; i < n; ++i) scale = std::max(scale, std::fabs(double(want[i])));
    for (size_t i = 0; i < n; ++i) {
        const double d = std::fabs(double(got[i]) - double(want[i]));
        if (!(d <= err)) err = d;  // NaN wins
    }
    return scale > 0.0 ? err / scale : err;
}

// ------------------------------------------------------------------------------------------ GELU
template <class T>
static void check_gelu(GeluApprox a, const char* tag) {
    const double eps = std::numeric_limits<T>::epsilon();
    for (int64_t n : {0, 1, 3, 4, 5, 7, 8, 17, 1023, 4099}) {
        for (int offset : {0, 1}) {  // offset 1: not 16-byte aligned -> element-wise path only
            std::vector<T> xs = randn<T>(static_cast<size_t>(n + 1), unsigned(n) + 7, 3.0), dys = randn<T>(static_cast<size_t>(n + 1), 99);
            const T* x = xs.data() + offset;
            const T* dy = dys.data() + offset;
            std::vector<T> y_cpu(static_cast<size_t>(n)), y_gpu(static_cast<size_t>(n) + 1), dx_cpu(static_cast<size_t>(n)), dx_gpu(static_cast<size_t>(n) + 1);
            pygpt::gelu_forward(x, y_cpu.data(), n, a);
            pygpt::gelu_backward(x, dy, dx_cpu.data(), n, a);
            emu::gelu_forward(x, y_gpu.data() + offset, n, a, nullptr);
            emu::gelu_backward(x, dy, dx_gpu.data() + offset, n, a, nullptr);
            int bad = 0;
            for (int64_t i = 0; i < n; ++i) {
                const double xi = double(x[i]);
                const double yf = double(y_gpu[static_cast<size_t>(i + offset)]), yc = double(y_cpu[static_cast<size_t>(i)]);
                const double df = double(dx_gpu[static_cast<size_t>(i + offset)]), dc = double(dx_cpu[static_cast<size_t>(i)]);
                // a few ulp of the condition number, as the Python tests (both sides approximate)
                const double tf = 32 * eps * (std::fabs(yc) + std::fabs(xi) * 1.2) + 1e-37;
                const double tb = 32 * eps * (std::fabs(dc) + (1 + xi * xi) * std::fabs(double(dy[i]))) + 1e-37;
                if (!(std::fabs(yf - yc) <= tf) || !(std::fabs(df - dc) <= tb)) ++bad;
            }
            CHECK(bad == 0, "gelu %s %s n=%lld offset=%d: %d elements off", tag, sizeof(T) == 4 ? "f32" : "f64",
                  (long long)n, offset, bad);
        }
    }
    // in place forward
    std::vector<T> x = randn<T>(1000, 5, 3.0), y(1000);
    emu::gelu_forward(x.data(), y.data(), 1000, a, nullptr);
    emu::gelu_forward(x.data(), x.data(), 1000, a, nullptr);
    CHECK(same_bits(x.data(), y.data(), 1000), "gelu %s in place differs", tag);
    // special values, exactly the CPU kernel's
    const T inf = std::numeric_limits<T>::infinity(), nan = std::numeric_limits<T>::quiet_NaN();
    std::vector<T> sx = {inf, -inf, nan, T(1e30), T(-1e30), T(0), T(-0.0)}, ones(sx.size(), T(1));
    std::vector<T> sy(sx.size()), sd(sx.size());
    emu::gelu_forward(sx.data(), sy.data(), int64_t(sx.size()), a, nullptr);
    emu::gelu_backward(sx.data(), ones.data(), sd.data(), int64_t(sx.size()), a, nullptr);
    CHECK(sy[0] == inf && sy[1] == 0 && std::isnan(sy[2]) && sy[3] == T(1e30) && sy[4] == 0 && sy[5] == 0,
          "gelu %s special values forward", tag);
    CHECK(sd[0] == 1 && sd[1] == 0 && std::isnan(sd[2]) && sd[3] == 1 && sd[4] == 0 && sd[5] == T(0.5),
          "gelu %s special values backward", tag);
}

// ------------------------------------------------------------------------------------------ dropout, Adam
template <class T>
static void check_dropout_adam() {
    for (int64_t n : {0, 1, 5, 8, 33, 1001}) {
        for (int off : {0, 1}) {
            std::vector<T> x = randn<T>(static_cast<size_t>(n + 1), unsigned(n));
            std::vector<T> yc(static_cast<size_t>(n)), yg(static_cast<size_t>(n) + 1);
            for (double p : {0.0, 0.1, 0.5, 0.999}) {
                const uint64_t thr = uint64_t(std::nearbyint(p * 4294967296.0));
                const T scale = T(1.0 / (1.0 - p));
                pygpt::dropout_apply(x.data() + off, yc.data(), n, 1234567, thr, scale, 17);
                emu::dropout_apply(x.data() + off, yg.data() + off, n, 1234567, thr, scale, 17, nullptr);
                CHECK(same_bits(yc.data(), yg.data() + off, static_cast<size_t>(n)), "dropout n=%lld off=%d p=%g not bit-identical",
                      (long long)n, off, p);
            }
        }
    }
    for (int64_t n : {1, 7, 1000}) {
        for (int variant = 0; variant < 3; ++variant) {
            pygpt::AdamStep s;
            s.decay = variant == 0 ? 1.0 - 1e-3 * 0.1 : 1.0;
            s.l2 = variant == 1 ? 0.01 : 0.0;
            s.bias_correction2_sqrt = std::sqrt(1.0 - std::pow(0.999, 3));
            s.step_size = 1e-3 / (1.0 - std::pow(0.9, 3));
            std::vector<T> p = randn<T>(static_cast<size_t>(n), 1), g = randn<T>(static_cast<size_t>(n), 2), m = randn<T>(static_cast<size_t>(n), 3, 0.1),
                           v = randn<T>(static_cast<size_t>(n), 4, 0.1);
            for (auto& e : v) e = std::fabs(e);
            std::vector<T> p2 = p, m2 = m, v2 = v;
            pygpt::adam_update(p.data(), g.data(), m.data(), v.data(), n, s);
            emu::adam_update(p2.data(), g.data(), m2.data(), v2.data(), n, s, nullptr);
            CHECK(same_bits(p.data(), p2.data(), static_cast<size_t>(n)) && same_bits(m.data(), m2.data(), static_cast<size_t>(n)) &&
                      same_bits(v.data(), v2.data(), static_cast<size_t>(n)),
                  "adam n=%lld variant %d not bit-identical", (long long)n, variant);
        }
    }
}

// ------------------------------------------------------------------------------------------ LayerNorm
template <class T>
static void check_layernorm() {
    const double tol = sizeof(T) == 4 ? 2e-5 : 1e-12;
    const int64_t shapes[][2] = {{0, 4}, {1, 1}, {1, 2}, {3, 5}, {7, 17}, {4, 33}, {130, 768}, {2, 1600}, {300, 3}};
    for (const auto& sh : shapes) {
        const int64_t rows = sh[0], C = sh[1];
        const size_t n = static_cast<size_t>(rows * C);
        std::vector<T> x = randn<T>(n, unsigned(rows * 31 + C), 2.0), w = randn<T>(static_cast<size_t>(C), 5), b = randn<T>(static_cast<size_t>(C), 6),
                       dy = randn<T>(n, 7);
        for (auto& e : x) e += T(3);  // an offset the two-pass variance must handle
        std::vector<double> xd(x.begin(), x.end()), wd(w.begin(), w.end()), bd(b.begin(), b.end()), dyd(dy.begin(), dy.end());
        std::vector<double> yr(n), mr(static_cast<size_t>(rows)), rr(static_cast<size_t>(rows)), dxr(n), dwr(static_cast<size_t>(C)), dbr(static_cast<size_t>(C));
        pygpt::layernorm_forward(xd.data(), wd.data(), bd.data(), yr.data(), mr.data(), rr.data(), rows, C, 1e-5);
        pygpt::layernorm_backward(xd.data(), wd.data(), mr.data(), rr.data(), dyd.data(), dxr.data(), dwr.data(),
                                  dbr.data(), rows, C);
        std::vector<T> y(n), mean(static_cast<size_t>(rows)), rstd(static_cast<size_t>(rows)), dx(n), dw(static_cast<size_t>(C), T(7)), db(static_cast<size_t>(C), T(7));
        emu::layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, C, 1e-5, nullptr);
        std::vector<unsigned char> ws(emu::layernorm_backward_workspace_size(rows, C) + 8);
        void* wsp = ws.data() + (8 - reinterpret_cast<uintptr_t>(ws.data()) % 8) % 8;
        // the backward from the emulated forward's mean/rstd, as a training step does
        emu::layernorm_backward(x.data(), w.data(), mean.data(), rstd.data(), dy.data(), dx.data(), dw.data(),
                                db.data(), rows, C, wsp, ws.size() - 8, nullptr);
        CHECK(rel_err(y.data(), yr.data(), n) <= tol, "layernorm y rows=%lld C=%lld err %g", (long long)rows,
              (long long)C, rel_err(y.data(), yr.data(), n));
        CHECK(rel_err(mean.data(), mr.data(), static_cast<size_t>(rows)) <= tol && rel_err(rstd.data(), rr.data(), static_cast<size_t>(rows)) <= tol,
              "layernorm mean/rstd rows=%lld C=%lld", (long long)rows, (long long)C);
        // dx cancels (for C = 2 it is exactly 0): absolute below 1, as tests/test_ops_native.py
        CHECK(scaled_err(dx.data(), dxr.data(), n, 1.0) <= 4 * tol, "layernorm dx rows=%lld C=%lld err %g",
              (long long)rows, (long long)C, scaled_err(dx.data(), dxr.data(), n, 1.0));
        CHECK(rel_err(dw.data(), dwr.data(), static_cast<size_t>(C)) <= 4 * tol && rel_err(db.data(), dbr.data(), static_cast<size_t>(C)) <= 4 * tol,
              "layernorm dw/db rows=%lld C=%lld err %g %g", (long long)rows, (long long)C,
              rel_err(dw.data(), dwr.data(), static_cast<size_t>(C)), rel_err(db.data(), dbr.data(), static_cast<size_t>(C)));
        // skipped gradients: only what is asked for is written
        std::vector<T> dw2(static_cast<size_t>(C), T(7));
        emu::layernorm_backward(x.data(), w.data(), mean.data(), rstd.data(), dy.data(), nullptr, dw2.data(), nullptr,
                                rows, C, wsp, ws.size() - 8, nullptr);
        CHECK(same_bits(dw.data(), dw2.data(), static_cast<size_t>(C)), "layernorm dw alone differs rows=%lld C=%lld",
              (long long)rows, (long long)C);
    }
    CHECK(throws_invalid([] {
              std::vector<T> a(64);
              emu::layernorm_backward(a.data(), a.data(), a.data(), a.data(), a.data(), nullptr, a.data(), nullptr, 8, 8,
                                      nullptr, 0, nullptr);
          }),
          "layernorm backward without workspace must throw");
}

// ------------------------------------------------------------------------------------------ cross-entropy
template <class T>
static void check_cross_entropy() {
    const double tol = sizeof(T) == 4 ? 3e-6 : 1e-13;
    const int64_t shapes[][2] = {{1, 1}, {1, 2}, {3, 7}, {5, 16}, {4, 17}, {2, 1023}, {3, 1024}, {2, 1025}, {3, 50257}};
    for (const auto& sh : shapes) {
        for (double zscale : {1.0, 30.0}) {
            const int64_t rows = sh[0], V = sh[1];
            const size_t n = static_cast<size_t>(rows * V);
            std::vector<T> z = randn<T>(n, unsigned(rows * V), zscale);
            std::vector<int64_t> t(static_cast<size_t>(rows));
            for (int64_t r = 0; r < rows; ++r) t[static_cast<size_t>(r)] = (r * 7919 + 3) % V;
            if (rows > 2) t[1] = -100;  // ignored
            std::vector<double> zd(z.begin(), z.end()), lr(static_cast<size_t>(rows)), sr(static_cast<size_t>(rows)), dr(n);
            pygpt::cross_entropy_forward(zd.data(), t.data(), lr.data(), sr.data(), rows, V, -100);
            std::vector<double> rsd = randn<double>(static_cast<size_t>(rows), 3);
            std::vector<T> rs(rsd.begin(), rsd.end());
            for (size_t i = 0; i < rsd.size(); ++i) rsd[i] = double(rs[i]);
            pygpt::cross_entropy_backward(zd.data(), t.data(), sr.data(), rsd.data(), 0.5, dr.data(), rows, V, -100);
            std::vector<T> loss(static_cast<size_t>(rows)), lse(static_cast<size_t>(rows)), d(n);
            emu::cross_entropy_forward(z.data(), t.data(), loss.data(), lse.data(), rows, V, -100, nullptr);
            emu::cross_entropy_backward(z.data(), t.data(), lse.data(), rs.data(), T(0.5), d.data(), rows, V, -100,
                                        nullptr);
            double mag = 1.0;
            for (size_t i = 0; i < n; ++i) mag = std::max(mag, std::fabs(double(z[i])));
            double el = 0.0;
            for (int64_t r = 0; r < rows; ++r)
                el = std::max({el, std::fabs(double(loss[static_cast<size_t>(r)]) - lr[static_cast<size_t>(r)]),
                               std::fabs(double(lse[static_cast<size_t>(r)]) - sr[static_cast<size_t>(r)])});
            CHECK(el <= tol * mag * 4, "cross_entropy rows=%lld V=%lld scale=%g loss/lse err %g", (long long)rows,
                  (long long)V, zscale, el);
            CHECK(rel_err(d.data(), dr.data(), n) <= 8 * tol * (zscale > 1 ? 30 : 1),
                  "cross_entropy backward rows=%lld V=%lld err %g", (long long)rows, (long long)V,
                  rel_err(d.data(), dr.data(), n));
            if (rows > 2) CHECK(loss[1] == 0, "ignored row must have loss 0");
            // in place: the gradient written over the logits
            std::vector<T> zi = z;
            emu::cross_entropy_backward(zi.data(), t.data(), lse.data(), rs.data(), T(0.5), zi.data(), rows, V, -100,
                                        nullptr);
            CHECK(same_bits(zi.data(), d.data(), n), "cross_entropy in-place backward differs");
        }
    }
    // extreme logits, as the CPU test; and an out-of-range target gives NaN, never an out-of-bounds read
    const int64_t V = 40;
    std::vector<T> z(static_cast<size_t>(5 * V), T(0));
    for (int64_t j = 0; j < V; ++j) {
        z[static_cast<size_t>(j)] = -std::numeric_limits<T>::infinity();
        z[static_cast<size_t>(V + j)] = T(60);
        z[static_cast<size_t>(2 * V + j)] = j % 2 == 0 ? T(-1e30) : T(0);
        z[static_cast<size_t>(4 * V + j)] = T(-100 + 200.0 * double(j) / double(V - 1));
    }
    z[3] = T(1);
    z[static_cast<size_t>(3 * V + 7)] = T(80);
    std::vector<int64_t> t = {3, 5, 1, 7, 0};
    std::vector<T> loss(5), lse(5), d(static_cast<size_t>(5 * V));
    emu::cross_entropy_forward(z.data(), t.data(), loss.data(), lse.data(), 5, V, -100, nullptr);
    CHECK(loss[0] == 0 && lse[0] == T(1), "extreme logits: single finite logit");
    bool finite = true;
    for (T e : loss) finite = finite && std::isfinite(double(e));
    CHECK(finite, "extreme logits: finite losses");
    CHECK(std::fabs(double(loss[1]) - std::log(double(V))) <= 1e-5 * std::log(double(V)), "uniform row");
    emu::cross_entropy_backward(z.data(), t.data(), lse.data(), nullptr, T(1), d.data(), 5, V, -100, nullptr);
    for (int r = 0; r < 5; ++r) {
        double s = 0.0;
        for (int64_t j = 0; j < V; ++j) s += double(d[static_cast<size_t>(r * V + j)]);
        CHECK(std::fabs(s) <= 1e-5, "extreme logits row %d: gradient sums to %g", r, s);
    }
    std::vector<int64_t> tb = {3, 40, -5, 7, 0};
    emu::cross_entropy_forward(z.data(), tb.data(), loss.data(), lse.data(), 5, V, -100, nullptr);
    CHECK(std::isnan(double(loss[1])) && std::isnan(double(loss[2])) && loss[0] == 0, "bad targets must give NaN");
    emu::cross_entropy_backward(z.data(), tb.data(), lse.data(), nullptr, T(1), d.data(), 5, V, -100, nullptr);
    CHECK(std::isnan(double(d[static_cast<size_t>(V)])) && std::isfinite(double(d[0])), "bad target rows of the gradient are NaN");
    // NaN in a row makes its loss NaN
    std::vector<T> z2(8, T(0));
    z2[2] = std::numeric_limits<T>::quiet_NaN();
    std::vector<int64_t> t2 = {0, 1};
    emu::cross_entropy_forward(z2.data(), t2.data(), loss.data(), lse.data(), 2, 4, -100, nullptr);
    CHECK(std::isnan(double(loss[0])) && std::fabs(double(loss[1]) - std::log(4.0)) < 1e-6, "NaN logit row");
}

// ------------------------------------------------------------------------------------------ attention
struct AttnCase {
    int64_t B, H, Tq, Tk, d;
};

/// Runs the emulated float32 kernel and the CPU double kernel on the same values; returns the
/// worst relative error of (out, lse, dq, dk, dv). packed: q/k/v are views of (B, T, 3, H, d).
static double g_attn_worst = 0.0;
static int g_attn_cases = 0;

static double attention_case(const AttnCase& c, bool causal, bool masked, double p, bool packed, unsigned seed,
                             const char* tag) {
    const int64_t B = c.B, H = c.H, Tq = c.Tq, Tk = c.Tk, d = c.d;
    const pygpt::AttentionShape shape{B, H, Tq, Tk, d};
    const size_t nq = static_cast<size_t>(B * H * Tq * d), nk = static_cast<size_t>(B * H * Tk * d);
    // contiguous float values (the reference reads these in double)
    std::vector<float> q = randn<float>(nq, seed), k = randn<float>(nk, seed + 1), v = randn<float>(nk, seed + 2),
                       g = randn<float>(nq, seed + 3);
    std::vector<uint8_t> mask;
    pygpt::AttentionOptions opt;
    opt.causal = causal;
    opt.dropout_p = p;
    opt.dropout_key = 0x1234567887654321ull + seed;
    if (masked) {
        mask.assign(static_cast<size_t>(B * Tk), 1);
        for (int64_t j = 0; j < Tk; ++j) mask[static_cast<size_t>(j)] = (j * 7 + 3) % 5 != 0;  // batch 0: some keys out
        if (B > 1)
            for (int64_t j = 0; j < Tk; ++j) mask[static_cast<size_t>(Tk + j)] = 0;  // batch 1: every key out
        opt.key_mask = mask.data();
    }
    const auto cs = [&](int64_t T) { return pygpt::attention_contiguous(shape, T); };
    // reference in double
    std::vector<double> qd(q.begin(), q.end()), kd(k.begin(), k.end()), vd(v.begin(), v.end()), gd(g.begin(), g.end());
    std::vector<double> outr(nq), lser(static_cast<size_t>(B * H * Tq)), dqr(nq), dkr(nk), dvr(nk);
    pygpt::attention_forward(shape, qd.data(), cs(Tq), kd.data(), cs(Tk), vd.data(), cs(Tk), outr.data(), cs(Tq),
                             lser.data(), opt);
    pygpt::attention_backward(shape, qd.data(), cs(Tq), kd.data(), cs(Tk), vd.data(), cs(Tk), outr.data(), cs(Tq),
                              lser.data(), gd.data(), cs(Tq), dqr.data(), cs(Tq), dkr.data(), cs(Tk), dvr.data(), cs(Tk),
                              opt);
    // the emulated kernel's operands: contiguous, or views of one packed (B, T, 3, H, d) buffer
    std::vector<float> qkv;
    const float *qp = q.data(), *kp = k.data(), *vp = v.data();
    pygpt::AttentionStrides qs = cs(Tq), ks = cs(Tk), vs = cs(Tk);
    if (packed) {  // needs Tq == Tk
        qkv.assign(static_cast<size_t>(B * Tq * 3 * H * d) + 1, 0.f);
        float* base = qkv.data() + (d % 4 == 0 ? 0 : 1);  // odd d: also an unaligned base
        for (int64_t b = 0; b < B; ++b)
            for (int64_t h = 0; h < H; ++h)
                for (int64_t t = 0; t < Tq; ++t)
                    for (int64_t e = 0; e < d; ++e) {
                        const size_t src = static_cast<size_t>(((b * H + h) * Tq + t) * d + e);
                        float* row = base + ((b * Tq + t) * 3 * H) * d;
                        row[(0 * H + h) * d + e] = q[src];
                        row[(1 * H + h) * d + e] = k[src];
                        row[(2 * H + h) * d + e] = v[src];
                    }
        qs = ks = vs = {Tq * 3 * H * d, d, 3 * H * d};
        qp = base;
        kp = base + H * d;
        vp = base + 2 * H * d;
    }
    // out as the (B, H, Tq, d) view of a (B, Tq, H, d) array, as functional.py allocates it
    const pygpt::AttentionStrides os{Tq * H * d, d, H * d};
    std::vector<float> outv(nq, NAN), lse(static_cast<size_t>(B * H * Tq), NAN), dq(nq, NAN), dk(nk, NAN), dv(nk, NAN);
    emu::attention_forward(shape, qp, qs, kp, ks, vp, vs, outv.data(), os, lse.data(), opt, nullptr);
    std::vector<float> ws(emu::attention_backward_workspace_size(shape) / 4 + 1);
    emu::attention_backward(shape, qp, qs, kp, ks, vp, vs, outv.data(), os, lse.data(), g.data(), cs(Tq), dq.data(),
                            cs(Tq), dk.data(), cs(Tk), dv.data(), cs(Tk), opt, ws.data(), ws.size() * 4, nullptr);
    std::vector<float> out(nq);  // back to (B, H, Tq, d)
    for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
            for (int64_t t = 0; t < Tq; ++t)
                for (int64_t e = 0; e < d; ++e)
                    out[static_cast<size_t>(((b * H + h) * Tq + t) * d + e)] = outv[static_cast<size_t>(b * os.batch + h * os.head + t * os.seq + e)];
    // lse: +inf rows must match exactly; finite ones by value
    double lerr = 0.0;
    for (size_t i = 0; i < lse.size(); ++i) {
        if (std::isinf(lser[i])) {
            if (!(std::isinf(lse[i]) && lse[i] > 0)) lerr = 1.0;
        } else {
            lerr = std::max(lerr, std::fabs(double(lse[i]) - lser[i]) / (1.0 + std::fabs(lser[i])));
            if (std::isnan(lse[i])) lerr = 1.0;
        }
    }
    const double errs[5] = {rel_err(out.data(), outr.data(), nq), lerr, rel_err(dq.data(), dqr.data(), nq),
                            rel_err(dk.data(), dkr.data(), nk), rel_err(dv.data(), dvr.data(), nk)};
    double worst = 0.0;
    for (double e : errs) worst = std::isnan(e) ? 1.0 : std::max(worst, e);
    g_attn_worst = std::max(g_attn_worst, worst);
    ++g_attn_cases;
    CHECK(worst <= 2e-5,
          "attention %s B=%lld H=%lld Tq=%lld Tk=%lld d=%lld causal=%d masked=%d p=%g packed=%d: "
          "out %.3g lse %.3g dq %.3g dk %.3g dv %.3g",
          tag, (long long)B, (long long)H, (long long)Tq, (long long)Tk, (long long)d, int(causal), int(masked), p,
          int(packed), errs[0], errs[1], errs[2], errs[3], errs[4]);
    return worst;
}

static void check_attention() {
    const AttnCase grid[] = {
        {1, 1, 1, 1, 1},     {2, 3, 1, 9, 8},    {1, 2, 64, 64, 64}, {2, 2, 65, 65, 16},
        {1, 2, 130, 200, 3}, {1, 1, 77, 77, 65}, {1, 1, 40, 100, 130}, {1, 1, 33, 70, 256},
    };
    unsigned seed = 1;
    for (const AttnCase& c : grid)
        for (bool causal : {true, false}) attention_case(c, causal, false, 0.0, false, seed++, "grid");
    attention_case({2, 2, 70, 3, 5}, false, false, 0.0, false, seed++, "more queries than keys");
    for (bool causal : {true, false}) {
        attention_case({2, 2, 50, 70, 32}, causal, true, 0.0, false, seed++, "key mask");
        attention_case({2, 2, 70, 70, 64}, causal, false, 0.0, true, seed++, "packed qkv");
        attention_case({1, 2, 45, 45, 7}, causal, false, 0.0, true, seed++, "packed qkv, odd d");
        attention_case({1, 1, 100, 100, 128}, causal, false, 0.0, false, seed++, "d=128 several tiles");
        attention_case({1, 1, 40, 40, 200}, causal, false, 0.0, false, seed++, "d=200 (256 bucket)");
    }
    for (double p : {0.1, 0.5, 0.9}) {
        attention_case({2, 2, 67, 67, 16}, true, false, p, false, seed++, "dropout causal");
        attention_case({1, 2, 30, 90, 40}, false, true, p, false, seed++, "dropout masked");
    }
    attention_case({1, 1, 0, 5, 8}, false, false, 0.0, false, seed++, "no queries");
    attention_case({1, 1, 4, 0, 8}, false, false, 0.0, false, seed++, "no keys");
    attention_case({0, 2, 4, 4, 8}, true, false, 0.0, false, seed++, "no batch");

    // bad arguments: std::invalid_argument before anything runs
    float buf[64] = {};
    const pygpt::AttentionStrides s1{16, 16, 4};
    pygpt::AttentionOptions o;
    auto fwd = [&](pygpt::AttentionShape sh, const pygpt::AttentionOptions& op) {
        return [=, &buf] { emu::attention_forward(sh, buf, s1, buf, s1, buf, s1, buf + 32, s1, buf + 48, op, nullptr); };
    };
    CHECK(throws_invalid(fwd({1, 1, 2, 2, 0}, o)), "head_dim 0");
    CHECK(throws_invalid(fwd({1, 1, 2, 2, 257}, o)), "head_dim 257");
    CHECK(throws_invalid(fwd({1, 1, 3, 2, 4}, o)), "causal with Tk < Tq");
    CHECK(throws_invalid(fwd({-1, 1, 2, 2, 4}, o)), "negative batch");
    pygpt::AttentionOptions bad = o;
    bad.dropout_p = 1.0;
    CHECK(throws_invalid(fwd({1, 1, 2, 2, 4}, bad)), "dropout_p 1");
    bad.dropout_p = std::nan("");
    CHECK(throws_invalid(fwd({1, 1, 2, 2, 4}, bad)), "dropout_p NaN");
    CHECK(throws_invalid([&] {
              emu::attention_forward({1, 1, 2, 2, 4}, buf, {-1, 0, 4}, buf, s1, buf, s1, buf + 32, s1, buf + 48, o,
                                     nullptr);
          }),
          "negative stride");
    CHECK(throws_invalid([&] {
              emu::attention_forward({1, 1, 2, 2, 4}, nullptr, s1, buf, s1, buf, s1, buf + 32, s1, buf + 48, o, nullptr);
          }),
          "null q");
    CHECK(throws_invalid([&] {
              emu::attention_backward({1, 1, 2, 2, 4}, buf, s1, buf, s1, buf, s1, buf, s1, buf, buf, s1, buf + 32, s1,
                                      buf + 40, s1, buf + 48, s1, o, buf + 56, 4, nullptr);
          }),
          "workspace too small");
}

static void check_bad_arguments() {
    float f[8] = {};
    CHECK(throws_invalid([&] { emu::gelu_forward(f, f, -1, GeluApprox::Tanh, nullptr); }), "gelu n < 0");
    CHECK(throws_invalid([&] { emu::gelu_forward(nullptr, f, 4, GeluApprox::Tanh, nullptr); }), "gelu null x");
    CHECK(throws_invalid([&] { emu::gelu_backward(f, nullptr, f, 4, GeluApprox::None, nullptr); }), "gelu null dy");
    CHECK(throws_invalid([&] { emu::dropout_apply(f, f, 4, 1, (uint64_t(1) << 32) + 1, 1.f, 0, nullptr); }),
          "dropout threshold > 2^32");
    CHECK(throws_invalid([&] { emu::adam_update(f, nullptr, f, f, 4, pygpt::AdamStep{}, nullptr); }), "adam null g");
    CHECK(throws_invalid([&] { emu::layernorm_forward(f, f, f, f, f, f, 2, 0, 1e-5, nullptr); }), "layernorm C 0");
    CHECK(throws_invalid([&] { emu::layernorm_forward(f, f, f, f, f, f, 2, 4, -1.0, nullptr); }), "layernorm eps < 0");
    int64_t t[2] = {0, 1};
    CHECK(throws_invalid([&] { emu::cross_entropy_forward(f, t, f, f, 2, 0, -100, nullptr); }), "cross_entropy V 0");
    CHECK(throws_invalid([&] { emu::cross_entropy_forward(f, nullptr, f, f, 2, 4, -100, nullptr); }),
          "cross_entropy null targets");
}

int main() {
    check_gelu<float>(GeluApprox::Tanh, "tanh");
    check_gelu<float>(GeluApprox::None, "erf");
    check_gelu<double>(GeluApprox::Tanh, "tanh");
    check_gelu<double>(GeluApprox::None, "erf");
    check_dropout_adam<float>();
    check_dropout_adam<double>();
    check_layernorm<float>();
    check_layernorm<double>();
    check_cross_entropy<float>();
    check_cross_entropy<double>();
    check_attention();
    check_bad_arguments();
    std::printf("attention: %d cases, worst relative error %.3g (float32 kernel vs the CPU kernel in double)\n",
                g_attn_cases, g_attn_worst);
    return check_summary();
}
