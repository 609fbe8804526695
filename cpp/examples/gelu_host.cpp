// A host program linking the installed pygpt kernel library (find_package(pygpt CONFIG)).
// Runs GELU forward and backward on its own buffers and prints a few values.
#include <pygpt/pygpt.h>

#include <cstdio>
#include <vector>

int main() {
    const pygpt::BuildInfo info = pygpt::build_info();
    std::printf("pygpt %s (%s, OpenMP %s, %d threads, CUDA %s)\n", info.version.c_str(), info.compiler.c_str(),
                info.openmp ? "yes" : "no", info.max_threads, info.cuda ? "yes" : "no");

    const int64_t n = 9;
    std::vector<float> x(n), y(n), dy(n, 1.0f), dx(n);
    for (int64_t i = 0; i < n; ++i) x[i] = -4.0f + float(i);  // -4 .. 4

    for (auto approx : {pygpt::GeluApprox::Tanh, pygpt::GeluApprox::None}) {
        pygpt::gelu_forward(x.data(), y.data(), n, approx);
        pygpt::gelu_backward(x.data(), dy.data(), dx.data(), n, approx);
        std::printf("%s form\n%8s %14s %14s\n", approx == pygpt::GeluApprox::Tanh ? "tanh" : "erf", "x", "gelu(x)",
                    "gelu'(x)");
        for (int64_t i = 0; i < n; ++i) std::printf("%8.1f %14.8f %14.8f\n", x[i], y[i], dx[i]);
    }
    return 0;
}
