// Standalone checks of the C++ kernels (no framework; registered with ctest).
//   * gelu forward/backward vs a long-double reference, tolerance scaled by the condition
//     number:  |y - ref| <= C eps (|f(x)| + |x f'(x)|)   (and the same with f', f'' for backward)
//   * backward vs central differences of the double forward
//   * tails (every n up to 67), in-place forward, thread-count invariance, special values,
//     bit-identical results from the baseline, AVX2 and AVX-512 variants,
//     std::invalid_argument on bad arguments.
//   * layernorm, cross-entropy, adam, embedding backward, dropout: long-double / exact references,
//     bit-identical across ISA variants and thread counts, std::invalid_argument on bad arguments.
#include <pygpt/pygpt.h>

#include "../src/cpu_dispatch.h"  // private: switch the ISA variant to compare them

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "check.h"

using pygpt::GeluApprox;
using LD = long double;

// ---- long-double reference ----
static const LD kK = std::sqrt(LD(2) / LD(3.14159265358979323846264338327950288L));
static const LD kC = LD(0.044715L);

// f(x): tanh form as x * sigmoid(2u) (= 0.5 x (1 + tanh u) without cancellation); erf form via erfc.
static LD ref_f(LD x, GeluApprox a) {
    if (a == GeluApprox::Tanh) {
        const LD u = kK * (x + kC * x * x * x);
        return x / (1 + std::exp(-2 * u));
    }
    return x * LD(0.5) * std::erfc(-x / std::sqrt(LD(2)));
}

static LD ref_df(LD x, GeluApprox a) {
    if (a == GeluApprox::Tanh) {
        const LD u = kK * (x + kC * x * x * x);
        const LD s = 1 / (1 + std::exp(-2 * u));    // (1 + t)/2
        const LD s1 = 1 / (1 + std::exp(2 * u));    // (1 - t)/2
        return s + 2 * x * s * s1 * kK * (1 + 3 * kC * x * x);
    }
    const LD cdf = LD(0.5) * std::erfc(-x / std::sqrt(LD(2)));
    const LD pdf = std::exp(-x * x / 2) / std::sqrt(2 * LD(3.14159265358979323846264338327950288L));
    return cdf + x * pdf;
}

static LD ref_d2f(LD x, GeluApprox a) {  // only used to size tolerances
    const LD h = LD(1e-5) * std::max(LD(1), std::fabs(x));
    return (ref_df(x + h, a) - ref_df(x - h, a)) / (2 * h);
}

template <class T>
static void check_against_reference(GeluApprox a, const char* tag) {
    std::vector<T> x;
    for (int i = -4000; i <= 4000; ++i) x.push_back(T(i) / T(100));  // [-40, 40] step 0.01
    std::mt19937_64 rng(1234);
    std::normal_distribution<double> normal(0.0, 3.0);
    for (int i = 0; i < 20000; ++i) x.push_back(T(normal(rng)));
    for (T v : {T(0), T(-0.0), T(1e-30), T(-1e-30), std::numeric_limits<T>::denorm_min(),
                std::numeric_limits<T>::min(), T(1e10), T(-1e10), std::numeric_limits<T>::max(),
                std::numeric_limits<T>::lowest()})
        x.push_back(v);
    const size_t n = x.size();
    std::vector<T> y(n), dy(n), dx(n);
    std::uniform_real_distribution<double> unif(-2.0, 2.0);
    for (auto& v : dy) v = T(unif(rng));
    pygpt::gelu_forward(x.data(), y.data(), int64_t(n), a);
    pygpt::gelu_backward(x.data(), dy.data(), dx.data(), int64_t(n), a);

    const LD eps = std::numeric_limits<T>::epsilon();
    // exp() results below the smallest normal number are flushed to zero: that moves f by up to
    // |x| min_normal and f' by up to 2k|x|(1 + 3c x^2) min_normal.
    const LD tiny = LD(std::numeric_limits<T>::min()) * 4;
    const LD C = 16;
    double worst_f = 0, worst_b = 0;
    for (size_t i = 0; i < n; ++i) {
        const LD xi = x[i];
        const LD f = ref_f(xi, a), df = ref_df(xi, a);
        const LD tol_f = C * eps * (std::fabs(f) + std::fabs(xi * df)) + tiny * (1 + std::fabs(xi));
        const LD err_f = std::fabs(LD(y[i]) - f);
        worst_f = std::max(worst_f, double(err_f / tol_f));
        CHECK(err_f <= tol_f, "%s forward x=%.9Lg y=%.9Lg ref=%.9Lg", tag, xi, LD(y[i]), f);
        const LD g = LD(dy[i]) * df;
        const LD d2 = std::isfinite(double(xi)) && std::fabs(xi) < 1e6 ? ref_d2f(xi, a) : 0;
        const LD ax = std::fabs(xi) < 1e6 ? std::fabs(xi) : 1e6;
        const LD tol_b = C * eps * (std::fabs(g) + std::fabs(xi * d2 * LD(dy[i]))) + tiny * (1 + ax * ax * ax);
        const LD err_b = std::fabs(LD(dx[i]) - g);
        worst_b = std::max(worst_b, double(err_b / tol_b));
        CHECK(err_b <= tol_b, "%s backward x=%.9Lg dx=%.9Lg ref=%.9Lg", tag, xi, LD(dx[i]), g);
    }
    std::printf("  %-14s worst error / tolerance: forward %.3f, backward %.3f\n", tag, worst_f, worst_b);
}

template <class T>
static void check_special_values(GeluApprox a, const char* tag) {
    const T inf = std::numeric_limits<T>::infinity(), nan = std::numeric_limits<T>::quiet_NaN();
    T x[3] = {inf, -inf, nan}, y[3], one[3] = {1, 1, 1}, dx[3];
    pygpt::gelu_forward(x, y, 3, a);
    pygpt::gelu_backward(x, one, dx, 3, a);
    CHECK(y[0] == inf, "%s f(+inf) = %g", tag, double(y[0]));
    CHECK(y[1] == 0, "%s f(-inf) = %g", tag, double(y[1]));
    CHECK(std::isnan(y[2]), "%s f(nan) = %g", tag, double(y[2]));
    CHECK(dx[0] == 1, "%s f'(+inf) = %g", tag, double(dx[0]));
    CHECK(dx[1] == 0, "%s f'(-inf) = %g", tag, double(dx[1]));
    CHECK(std::isnan(dx[2]), "%s f'(nan) = %g", tag, double(dx[2]));
}

static void check_finite_differences(GeluApprox a, const char* tag) {
    // f'(x) ~ (f(x+h) - f(x-h)) / 2h with the double kernel: error ~ h^2 |f'''| + eps |f| / h.
    const double h = 1e-5;
    double worst = 0;
    for (int i = -600; i <= 600; ++i) {
        const double x = i / 100.0 + 0.003;
        double xs[2] = {x + h, x - h}, fs[2], one = 1, d;
        pygpt::gelu_forward(xs, fs, 2, a);
        pygpt::gelu_backward(&x, &one, &d, 1, a);
        const double fd = (fs[0] - fs[1]) / (2 * h);
        worst = std::max(worst, std::fabs(fd - d));
        CHECK(std::fabs(fd - d) <= 1e-8, "%s finite difference at x=%g: %.12g vs %.12g", tag, x, fd, d);
    }
    std::printf("  %-14s worst |central difference - backward| = %.2e\n", tag, worst);
}

template <class T>
static void check_tails_inplace_threads(GeluApprox a, const char* tag) {
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.f, 2.f);
    // Every n up to 67 (covers any vector width and the scalar tail) against one-at-a-time calls.
    for (int n = 0; n <= 67; ++n) {
        std::vector<T> x(n + 1), y(n + 1, T(-7)), dy(n + 1), dx(n + 1, T(-7));
        for (auto& v : x) v = T(normal(rng));
        for (auto& v : dy) v = T(normal(rng));
        pygpt::gelu_forward(x.data(), y.data(), n, a);
        pygpt::gelu_backward(x.data(), dy.data(), dx.data(), n, a);
        bool ok = y[n] == T(-7) && dx[n] == T(-7);  // nothing written past n
        for (int i = 0; i < n; ++i) {
            T yi, dxi;
            pygpt::gelu_forward(&x[i], &yi, 1, a);
            pygpt::gelu_backward(&x[i], &dy[i], &dxi, 1, a);
            ok = ok && std::memcmp(&yi, &y[i], sizeof(T)) == 0 && std::memcmp(&dxi, &dx[i], sizeof(T)) == 0;
        }
        CHECK(ok, "%s tail n=%d differs from element-wise calls (or wrote past the end)", tag, n);
    }
    // In place and any thread count give identical bits (n large enough for several chunks).
    const int64_t n = 300007;
    std::vector<T> x(n), y(n), z(n), dy(n), d1(n), d2(n);
    for (auto& v : x) v = T(normal(rng));
    for (auto& v : dy) v = T(normal(rng));
    const int saved = pygpt::num_threads();
    pygpt::set_num_threads(1);
    pygpt::gelu_forward(x.data(), y.data(), n, a);
    pygpt::gelu_backward(x.data(), dy.data(), d1.data(), n, a);
    pygpt::set_num_threads(4);
    pygpt::gelu_backward(x.data(), dy.data(), d2.data(), n, a);
    z = x;
    pygpt::gelu_forward(z.data(), z.data(), n, a);
    pygpt::set_num_threads(saved);
    CHECK(std::memcmp(y.data(), z.data(), n * sizeof(T)) == 0, "%s in-place/threaded forward differs", tag);
    CHECK(std::memcmp(d1.data(), d2.data(), n * sizeof(T)) == 0, "%s backward differs with 1 vs 4 threads", tag);
}

template <class T>
static void check_isa_variants_identical(GeluApprox a, const char* tag) {
    using pygpt::detail::Isa;
    std::vector<T> x;
    for (int i = -50000; i <= 50000; ++i) x.push_back(T(i) / T(1000));  // [-50, 50]
    const int64_t n = int64_t(x.size());
    std::vector<T> dy(x.size(), T(0.75)), y0(n), d0(n), y1(n), d1(n);
    const Isa saved = pygpt::detail::active_isa();
    pygpt::detail::set_active_isa(Isa::Baseline);
    pygpt::gelu_forward(x.data(), y0.data(), n, a);
    pygpt::gelu_backward(x.data(), dy.data(), d0.data(), n, a);
    for (Isa isa : {Isa::Avx2, Isa::Avx512}) {
        if (!pygpt::detail::isa_supported(isa)) {
            std::printf("  %-14s %s variant not available here\n", tag, pygpt::detail::isa_name(isa));
            continue;
        }
        pygpt::detail::set_active_isa(isa);
        pygpt::gelu_forward(x.data(), y1.data(), n, a);
        pygpt::gelu_backward(x.data(), dy.data(), d1.data(), n, a);
        CHECK(std::memcmp(y0.data(), y1.data(), n * sizeof(T)) == 0, "%s forward: baseline and %s differ", tag,
              pygpt::detail::isa_name(isa));
        CHECK(std::memcmp(d0.data(), d1.data(), n * sizeof(T)) == 0, "%s backward: baseline and %s differ", tag,
              pygpt::detail::isa_name(isa));
    }
    pygpt::detail::set_active_isa(saved);
}

template <class Fn>
static bool throws_invalid(Fn fn) {
    try {
        fn();
    } catch (const std::invalid_argument&) {
        return true;
    } catch (...) {
    }
    return false;
}

static void check_bad_arguments() {
    float x[4] = {0, 1, 2, 3}, y[4];
    CHECK(throws_invalid([&] { pygpt::gelu_forward(x, y, -1, GeluApprox::Tanh); }), "n < 0 accepted");
    CHECK(throws_invalid([&] { pygpt::gelu_forward(static_cast<float*>(nullptr), y, 4, GeluApprox::Tanh); }),
          "null x accepted");
    CHECK(throws_invalid([&] { pygpt::gelu_backward(x, nullptr, y, 4, GeluApprox::None); }), "null dy accepted");
    CHECK(throws_invalid([&] { pygpt::gelu_forward(x, y, 4, static_cast<GeluApprox>(7)); }),
          "bad GeluApprox accepted");
    CHECK(throws_invalid([] { pygpt::set_num_threads(0); }), "set_num_threads(0) accepted");
    CHECK(!throws_invalid([] { pygpt::gelu_forward(static_cast<const double*>(nullptr), nullptr, 0,
                                                   GeluApprox::Tanh); }),
          "n == 0 with null pointers must be a no-op");
}

// ---- the rest of the training step: layernorm, cross-entropy, adam, embedding, dropout ----
// Each against a long-double (or exact integer) reference on small odd sizes, then bit-identical
// across the ISA variants and thread counts, then std::invalid_argument on bad arguments.

template <class T>
static std::vector<T> randn(size_t n, unsigned seed, T scale = 1) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> nd;
    std::vector<T> v(n);
    for (auto& x : v) x = T(scale * nd(rng));
    return v;
}

/// All five kernels on fixed inputs; the concatenated output bytes (for the identity checks).
static std::string step_kernels_bytes() {
    std::string out;
    auto add = [&out](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); };
    const int64_t R = 37, C = 70, V = 1500, N = 9000;
    auto x = randn<float>(R * C, 1), w = randn<float>(C, 2), b = randn<float>(C, 3), g = randn<float>(R * C, 4);
    std::vector<float> y(R * C), mean(R), rstd(R), dx(R * C), dw(C), db(C);
    pygpt::layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), R, C, 1e-5);
    pygpt::layernorm_backward(x.data(), w.data(), mean.data(), rstd.data(), g.data(), dx.data(), dw.data(), db.data(),
                              R, C);
    for (auto* v : {&y, &mean, &rstd, &dx, &dw, &db}) add(v->data(), v->size() * sizeof(float));
    auto z = randn<float>(R * V, 5, 8.0f);
    std::vector<int64_t> t(R);
    for (int64_t r = 0; r < R; ++r) t[r] = r % 5 == 0 ? -100 : (r * 97) % V;
    std::vector<float> loss(R), lse(R), dz(R * V);
    pygpt::cross_entropy_forward(z.data(), t.data(), loss.data(), lse.data(), R, V, -100);
    pygpt::cross_entropy_backward(z.data(), t.data(), lse.data(), nullptr, 0.25f, dz.data(), R, V, -100);
    for (auto* v : {&loss, &lse, &dz}) add(v->data(), v->size() * sizeof(float));
    auto p = randn<double>(N, 6), gp = randn<double>(N, 7);
    std::vector<double> m(N, 0.0), vv(N, 0.0);
    pygpt::AdamStep s;
    s.decay = 0.999;
    s.step_size = 0.01;
    s.bias_correction2_sqrt = 0.05;
    for (int k = 0; k < 2; ++k) pygpt::adam_update(p.data(), gp.data(), m.data(), vv.data(), N, s);
    for (auto* v : {&p, &m, &vv}) add(v->data(), v->size() * sizeof(double));
    std::vector<int64_t> ids(R);
    for (int64_t i = 0; i < R; ++i) ids[i] = (i * 7) % 11;
    std::vector<float> dW(11 * C, 0.0f);
    pygpt::embedding_backward(ids.data(), g.data(), dW.data(), R, 11, C);
    add(dW.data(), dW.size() * sizeof(float));
    std::vector<float> yd(N);
    auto xd = randn<float>(N, 8);
    pygpt::dropout_apply(xd.data(), yd.data(), N, 42, uint64_t(0.3 * 4294967296.0), 1.0f / 0.7f, 3);
    add(yd.data(), yd.size() * sizeof(float));
    return out;
}

static void check_step_kernels_reference() {
    // layernorm (double) against long double
    const int64_t R = 5, C = 19;
    auto x = randn<double>(R * C, 11), w = randn<double>(C, 12), b = randn<double>(C, 13), g = randn<double>(R * C, 14);
    std::vector<double> y(R * C), mean(R), rstd(R), dx(R * C), dw(C), db(C);
    pygpt::layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), R, C, 1e-5);
    pygpt::layernorm_backward(x.data(), w.data(), mean.data(), rstd.data(), g.data(), dx.data(), dw.data(), db.data(),
                              R, C);
    std::vector<LD> rdw(C, 0), rdb(C, 0);
    for (int64_t r = 0; r < R; ++r) {
        LD mu = 0, var = 0, sh = 0, shx = 0;
        for (int64_t j = 0; j < C; ++j) mu += x[r * C + j];
        mu /= C;
        for (int64_t j = 0; j < C; ++j) var += (x[r * C + j] - mu) * (x[r * C + j] - mu);
        const LD rs = 1 / std::sqrt(var / C + LD(1e-5));
        for (int64_t j = 0; j < C; ++j) {
            const LD xh = (x[r * C + j] - mu) * rs, h = LD(g[r * C + j]) * w[j];
            CHECK(std::fabs(y[r * C + j] - (xh * w[j] + b[j])) < 1e-13, "layernorm y[%lld]", (long long)(r * C + j));
            sh += h;
            shx += h * xh;
            rdw[j] += g[r * C + j] * xh;
            rdb[j] += g[r * C + j];
        }
        for (int64_t j = 0; j < C; ++j) {
            const LD xh = (x[r * C + j] - mu) * rs, h = LD(g[r * C + j]) * w[j];
            CHECK(std::fabs(dx[r * C + j] - rs * (h - sh / C - xh * shx / C)) < 1e-12, "layernorm dx");
        }
    }
    for (int64_t j = 0; j < C; ++j) CHECK(std::fabs(dw[j] - rdw[j]) < 1e-12 && std::fabs(db[j] - rdb[j]) < 1e-12, "dw, db");

    // cross-entropy (float) against long double, tails around the 1024 block and the lanes
    for (int64_t V : {1, 2, 15, 17, 1023, 1025, 3001}) {
        const int64_t rows = 3;
        auto z = randn<float>(rows * V, unsigned(V), 20.0f);
        std::vector<int64_t> t = {V - 1, -100, V / 2};
        std::vector<float> loss(rows), lse(rows), dz(rows * V);
        pygpt::cross_entropy_forward(z.data(), t.data(), loss.data(), lse.data(), rows, V, -100);
        pygpt::cross_entropy_backward(z.data(), t.data(), lse.data(), nullptr, 0.5f, dz.data(), rows, V, -100);
        for (int64_t r = 0; r < rows; ++r) {
            LD m = -INFINITY, sum = 0;
            for (int64_t j = 0; j < V; ++j) m = std::max<LD>(m, z[r * V + j]);
            for (int64_t j = 0; j < V; ++j) sum += std::exp(LD(z[r * V + j]) - m);
            const LD l = m + std::log(sum);
            CHECK(std::fabs(lse[r] - l) <= 2e-6 * (1 + std::fabs(l)), "ce lse V=%lld", (long long)V);
            const LD want = t[r] == -100 ? 0 : l - z[r * V + t[r]];
            CHECK(std::fabs(loss[r] - want) <= 2e-6 * (1 + std::fabs(l)), "ce loss V=%lld", (long long)V);
            for (int64_t j = 0; j < V; ++j) {
                const LD d = t[r] == -100 ? 0 : (std::exp(LD(z[r * V + j]) - l) - (j == t[r])) * LD(0.5);
                CHECK(std::fabs(dz[r * V + j] - d) <= 1e-6, "ce grad V=%lld", (long long)V);
            }
        }
    }

    // adam (float) against the same operations in float, one element at a time
    {
        const int64_t n = 37;
        auto p = randn<float>(n, 21), g = randn<float>(n, 22), m = randn<float>(n, 23), v = randn<float>(n, 24);
        for (auto& e : v) e = e * e;
        auto p0 = p, m0 = m, v0 = v;
        pygpt::AdamStep s;
        s.decay = 1 - 1e-3;
        s.l2 = 0.0;
        s.bias_correction2_sqrt = 0.3;
        s.step_size = 0.02;
        pygpt::adam_update(p.data(), g.data(), m.data(), v.data(), n, s);
        for (int64_t i = 0; i < n; ++i) {
            const float pp = p0[i] * float(s.decay);
            const float mm = m0[i] + (g[i] - m0[i]) * float(s.one_minus_beta1);
            const float vv = v0[i] * float(s.beta2) + (g[i] * float(s.one_minus_beta2)) * g[i];
            const float den = std::sqrt(vv) / float(s.bias_correction2_sqrt) + float(s.eps);
            CHECK(p[i] == pp - (mm * float(s.step_size)) / den && m[i] == mm && v[i] == vv, "adam element %lld",
                  (long long)i);
        }
    }

    // dropout against SplitMix64 written out here
    {
        const int64_t n = 101;
        auto x = randn<float>(n, 31);
        std::vector<float> y(n);
        const uint64_t key = 0x1234, thr = 1u << 31, off = 17;
        pygpt::dropout_apply(x.data(), y.data(), n, key, thr, 2.0f, off);
        auto mix = [](uint64_t z) {
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
            return z ^ (z >> 31);
        };
        CHECK(pygpt::mix64(12345) == mix(12345), "mix64");
        for (int64_t i = 0; i < n; ++i) {
            const uint64_t u = mix(mix(key) + (off + uint64_t(i) + 1) * 0x9E3779B97F4A7C15ULL);
            CHECK(y[i] == x[i] * ((u >> 32) >= thr ? 2.0f : 0.0f), "dropout element %lld", (long long)i);
        }
    }

    // embedding: repeated ids accumulate in order
    {
        const int64_t ids[4] = {2, 0, 2, 2};
        const float dy[4 * 3] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
        float dW[3 * 3] = {0};
        pygpt::embedding_backward(ids, dy, dW, 4, 3, 3);
        CHECK(dW[0] == 4 && dW[2] == 6 && dW[3] == 0 && dW[6] == 1 + 7 + 10 && dW[8] == 3 + 9 + 12, "embedding");
    }
}

static void check_step_kernels_identical() {
    const pygpt::detail::Isa saved = pygpt::detail::active_isa();
    const int threads = pygpt::num_threads();
    pygpt::detail::set_active_isa(pygpt::detail::Isa::Baseline);
    pygpt::set_num_threads(1);
    const std::string ref = step_kernels_bytes();
    for (auto isa : {pygpt::detail::Isa::Baseline, pygpt::detail::Isa::Avx2, pygpt::detail::Isa::Avx512}) {
        if (!pygpt::detail::isa_supported(isa)) continue;
        pygpt::detail::set_active_isa(isa);
        for (int nt : {1, 2, 3}) {
            pygpt::set_num_threads(nt);
            CHECK(step_kernels_bytes() == ref, "step kernels differ: isa %s, %d threads", pygpt::detail::isa_name(isa), nt);
        }
    }
    pygpt::detail::set_active_isa(saved);
    pygpt::set_num_threads(threads);
}

static void check_step_kernels_bad_arguments() {
    float a[8] = {0}, o[8], m[2], r[2];
    int64_t t[2] = {0, 5};
    CHECK(throws_invalid([&] { pygpt::layernorm_forward(a, a, a, o, m, r, 2, 0, 1e-5); }), "layernorm C = 0");
    CHECK(throws_invalid([&] { pygpt::layernorm_forward(a, a, a, o, m, r, -1, 4, 1e-5); }), "layernorm rows < 0");
    CHECK(throws_invalid([&] { pygpt::layernorm_forward(a, a, a, o, m, r, 2, 4, -1.0); }), "layernorm eps < 0");
    CHECK(throws_invalid([&] { pygpt::layernorm_backward(a, nullptr, m, r, a, o, nullptr, nullptr, 2, 4); }),
          "layernorm null w with dx");
    CHECK(throws_invalid([&] { pygpt::cross_entropy_forward(a, t, m, r, 2, 4, -100); }), "ce target out of range");
    CHECK(throws_invalid([&] { pygpt::cross_entropy_forward(a, nullptr, m, r, 2, 4, -100); }), "ce null targets");
    CHECK(throws_invalid([&] { pygpt::cross_entropy_backward(a, t, r, nullptr, 1.0f, o, 2, 0, -100); }), "ce V = 0");
    CHECK(!throws_invalid([&] { pygpt::cross_entropy_forward(a, t, m, r, 2, 4, 5); }), "ce ignore_index = 5 ok");
    CHECK(throws_invalid([&] { pygpt::adam_update(o, nullptr, o, o, 4, pygpt::AdamStep{}); }), "adam null g");
    CHECK(throws_invalid([&] { pygpt::adam_update(o, a, o, o, -1, pygpt::AdamStep{}); }), "adam n < 0");
    const int64_t bad_ids[2] = {0, 3};
    CHECK(throws_invalid([&] { pygpt::embedding_backward(bad_ids, a, o, 2, 3, 2); }), "embedding id = V");
    CHECK(throws_invalid([&] { pygpt::dropout_apply(a, o, 4, 1, (uint64_t(1) << 32) + 1, 1.0f); }),
          "dropout threshold > 2^32");
    CHECK(throws_invalid([&] { pygpt::dropout_apply(a, nullptr, 4, 1, 0, 1.0f); }), "dropout null y");
}

int main() {
    const pygpt::BuildInfo info = pygpt::build_info();
    std::printf("pygpt %s, %s, %s, simd %s, OpenMP %s (%d threads), CUDA %s\n", info.version.c_str(),
                info.compiler.c_str(), info.build_type.c_str(), info.simd.c_str(), info.openmp ? "yes" : "no",
                info.max_threads, info.cuda ? "yes" : "no");
    check_against_reference<float>(GeluApprox::Tanh, "float tanh");
    check_against_reference<double>(GeluApprox::Tanh, "double tanh");
    check_against_reference<float>(GeluApprox::None, "float erf");
    check_against_reference<double>(GeluApprox::None, "double erf");
    check_special_values<float>(GeluApprox::Tanh, "float tanh");
    check_special_values<double>(GeluApprox::Tanh, "double tanh");
    check_special_values<float>(GeluApprox::None, "float erf");
    check_special_values<double>(GeluApprox::None, "double erf");
    check_finite_differences(GeluApprox::Tanh, "tanh");
    check_finite_differences(GeluApprox::None, "erf");
    check_tails_inplace_threads<float>(GeluApprox::Tanh, "float tanh");
    check_tails_inplace_threads<double>(GeluApprox::Tanh, "double tanh");
    check_tails_inplace_threads<float>(GeluApprox::None, "float erf");
    check_tails_inplace_threads<double>(GeluApprox::None, "double erf");
    check_isa_variants_identical<float>(GeluApprox::Tanh, "float tanh");
    check_isa_variants_identical<double>(GeluApprox::Tanh, "double tanh");
    check_isa_variants_identical<float>(GeluApprox::None, "float erf");
    check_isa_variants_identical<double>(GeluApprox::None, "double erf");
    check_bad_arguments();
    check_step_kernels_reference();
    check_step_kernels_identical();
    check_step_kernels_bad_arguments();
    return check_summary();
}
