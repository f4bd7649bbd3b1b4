#!/bin/sh
# Runs the decoder fuzz target for a bounded time: tests/fuzz/run.sh SECONDS [PYTHON]
# Fails (non-zero) when libFuzzer finds a crash, a sanitizer report, a leak or a timeout.
set -u
cd "$(dirname "$0")/../.."
seconds=${1:-60}
python=${2:-${PYTHON:-.venv/bin/python}}
"$python" tests/fuzz/make_corpus.py >/dev/null || exit 1
mkdir -p build/fuzz-artifacts
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
tests/fuzz/fuzz_decode -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix=build/fuzz-artifacts/ -dict=tests/fuzz/decode.dict tests/fuzz/corpus >build/fuzz.log 2>&1
rc=$?
tail -n 30 build/fuzz.log
if [ "$rc" -ne 0 ]; then
    echo "fuzzing found a problem (exit $rc): see build/fuzz.log and build/fuzz-artifacts/" >&2
fi
exit "$rc"
