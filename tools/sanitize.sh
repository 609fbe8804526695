#!/usr/bin/env bash
# Build pygpt's C++ library and extension with AddressSanitizer + UndefinedBehaviorSanitizer, then run
# the C++ tests (ctest) and the Python tests that exercise native code (kernels, BPE tokenizer, the
# bad-argument table, the tokenizer-file fuzz) under them.
#
#   bash tools/sanitize.sh            # from anywhere; needs gcc, cmake, python3 -m venv, PyPI
#   JOBS=4 bash tools/sanitize.sh     # parallel compile jobs (default 2)
#   bash tools/sanitize.sh -k bpe     # extra arguments go to pytest
#
# Everything goes under build/asan/ (git-ignored): the instrumented build (CUDA off), a private virtual
# environment (so an editable install elsewhere cannot shadow the instrumented module) and a staged
# copy of the package with the instrumented pygpt._C inside. Sanitizer reports are written to
# build/asan/reports/ (child processes included) and printed at the end; any report, test failure or
# build error makes the script exit non-zero. The last lines say what ran: ctest and pytest counts.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$root/build/asan
jobs=${JOBS:-2}
mkdir -p "$out"
t0=$SECONDS

if [ ! -x "$out/venv/bin/python" ]; then
  python3 -m venv "$out/venv"
  "$out/venv/bin/pip" install -q numpy pytest hypothesis pybind11 tiktoken tokenizers regex
fi
py=$out/venv/bin/python
"$py" -c 'import sys; assert sys.version_info >= (3, 11), "tools/sanitize.sh needs Python >= 3.11 (PYTHONSAFEPATH)"'
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"

cmake -S . -B "$out/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPYGPT_CUDA=OFF -DPYGPT_BUILD_TESTS=ON \
  -DPYGPT_BUILD_PYTHON=ON -DPython_EXECUTABLE="$py" -Dpybind11_DIR="$("$py" -m pybind11 --cmakedir)" \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" -DCMAKE_MODULE_LINKER_FLAGS="-fsanitize=address,undefined" \
  > "$out/cmake.log"
cmake --build "$out/build" -j "$jobs"
t_build=$((SECONDS - t0))

reports=$out/reports
rm -rf "$reports" "$out/ctest.log" "$out/pytest.log" && mkdir -p "$reports"
# log_path: every process (pytest's children too) writes its reports to a file, so none is lost in a
# captured stderr. Leak checking is off: CPython itself keeps memory alive at exit.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1:log_path=$reports/asan
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

summary() {
  local status=$?
  set +e
  echo
  echo "==== sanitize.sh summary ($((SECONDS - t0)) s in all; build ${t_build:-?} s, ctest ${t_ctest:-?} s, pytest ${t_pytest:-?} s)"
  [ -f "$out/ctest.log" ] && grep -E "tests passed|tests failed" "$out/ctest.log" | tail -1 | sed 's/^/ctest:  /'
  [ -f "$out/pytest.log" ] && grep -E "^(=+ )?[0-9]+ (passed|failed|error)" "$out/pytest.log" | tail -1 | sed 's/^/pytest: /'
  # A report is an ASan/UBSan error; a file holding only warnings (ASan's note that it does not fully
  # support swapcontext, which the CUDA emulator's fibers use) is shown but is not a failure.
  local errors notes
  errors=$(grep -lE "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$reports"/* 2>/dev/null | wc -l)
  notes=$(find "$reports" -type f 2>/dev/null | wc -l)
  if [ "$errors" -gt 0 ]; then
    echo "SANITIZER REPORTS: $errors file(s) in $reports"
    for f in $(grep -lE "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$reports"/*); do
      echo "---- $f"; head -80 "$f"
    done
    status=1
  else
    if [ "$notes" -gt 0 ]; then
      echo "sanitizer warnings (not errors), count and text:"
      sed 's/^==[0-9]*==//' "$reports"/* | sort | uniq -c | head -5
    fi
    [ "$status" -eq 0 ] && echo "sanitizers: clean (no ASan/UBSan error report)"
  fi
  [ "$status" -eq 0 ] || echo "sanitize.sh: FAILED (exit $status)"
  exit "$status"
}
trap summary EXIT

t1=$SECONDS
ctest --test-dir "$out/build" --output-on-failure 2>&1 | tee "$out/ctest.log"
t_ctest=$((SECONDS - t1))

rm -rf "$out/pkg" && mkdir -p "$out/pkg"
cp -r pygpt "$out/pkg/"
rm -f "$out"/pkg/pygpt/_C*.so  # never the uninstrumented module of an in-place build
cp "$out"/build/_C*.so "$out/pkg/pygpt/"
# Python itself is not instrumented: preload the sanitizer runtimes so the module's checks work.
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
# PYTHONSAFEPATH (Python >= 3.11, inherited by child interpreters): no current directory on sys.path,
# so `import pygpt` finds the staged, instrumented copy and never the source tree's pygpt/.
export PYTHONPATH="$out/pkg" PYTHONSAFEPATH=1 PYGPT_REQUIRE_NATIVE=1
native_tests=$(ls tests/test_native.py tests/test_*native*.py tests/test_bpe_fast.py \
  tests/test_fuzz_tokenizer_files.py 2>/dev/null | sort -u)
"$py" -c "import pygpt; assert pygpt.info()['native'], pygpt.info(); print('instrumented', pygpt.backend.native.__file__)"
t1=$SECONDS
"$py" -m pytest -q -p no:cacheprovider $native_tests "$@" 2>&1 | tee "$out/pytest.log"
t_pytest=$((SECONDS - t1))
