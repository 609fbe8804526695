#!/usr/bin/env bash
# Build pygpt's C++ library and extension with AddressSanitizer + UndefinedBehaviorSanitizer, then run
# the C++ tests (ctest) and the Python tests that exercise native code under them.
#
#   bash tools/sanitize.sh            # from the repository root; needs gcc, cmake, python3 -m venv, PyPI
#
# Everything goes under build/asan/ (git-ignored): the instrumented build, a private virtual environment
# (so an editable install elsewhere cannot shadow the instrumented module) and a staged copy of the
# package with the instrumented pygpt._C inside. Any sanitizer report aborts the run with a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$root/build/asan
mkdir -p "$out"

if [ ! -x "$out/venv/bin/python" ]; then
  python3 -m venv "$out/venv"
  "$out/venv/bin/pip" install -q numpy pytest hypothesis pybind11 tiktoken regex
fi
py=$out/venv/bin/python
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"

cmake -S . -B "$out/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPYGPT_CUDA=OFF -DPYGPT_BUILD_TESTS=ON \
  -DPYGPT_BUILD_PYTHON=ON -DPython_EXECUTABLE="$py" -Dpybind11_DIR="$("$py" -m pybind11 --cmakedir)" \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" -DCMAKE_MODULE_LINKER_FLAGS="-fsanitize=address,undefined"
cmake --build "$out/build" -j 2

export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir "$out/build" --output-on-failure

rm -rf "$out/pkg" && mkdir -p "$out/pkg"
cp -r pygpt "$out/pkg/"
cp "$out"/build/_C*.so "$out/pkg/pygpt/"
# Python itself is not instrumented: preload the ASan runtime so the module's checks work.
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
export PYTHONPATH="$out/pkg" PYGPT_REQUIRE_NATIVE=1
native_tests=$(ls tests/test_native.py tests/test_*native*.py tests/test_bpe_fast.py 2>/dev/null | sort -u)
"$py" -c "import pygpt, sys; assert pygpt.info()['native'], pygpt.info(); print('instrumented', pygpt.backend.native.__file__)"
"$py" -m pytest -q -p no:cacheprovider $native_tests
echo "sanitizers: clean"
