#!/bin/sh
# Builds the libFuzzer target tests/fuzz/fuzz_decode (ASan + UBSan) from the core C files
# (csrc/common and csrc/image, skipping any file that includes Python.h).
#   tests/fuzz/build.sh && python tests/fuzz/make_corpus.py
#   tests/fuzz/fuzz_decode -max_total_time=60 -dict=tests/fuzz/decode.dict tests/fuzz/corpus
set -eu
cd "$(dirname "$0")/../.."
SRCS=""
for f in csrc/common/*.c csrc/image/*.c; do
    if grep -q 'Python.h' "$f"; then continue; fi
    SRCS="$SRCS $f"
done
CC=${CC:-clang}
# shellcheck disable=SC2086
$CC -std=c11 -g -O1 -fno-omit-frame-pointer -pthread \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -Wall -Wextra -Wno-missing-field-initializers -Wno-unknown-warning-option \
    -Icsrc/include -I/usr/include/stb $(pkg-config --cflags libwebp libwebpdemux libjpeg) \
    tests/fuzz/fuzz_decode.c $SRCS \
    $(pkg-config --libs libwebpdemux libwebp libjpeg) -lm \
    -o tests/fuzz/fuzz_decode
echo "built tests/fuzz/fuzz_decode"
