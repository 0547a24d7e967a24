#!/bin/sh
# tools/fuzz.sh -- builds every libFuzzer harness (tests/fuzz/fuzz_*.c) with
# ASan + UBSan and runs each for a bounded time over a copy of its seed
# corpus (tests/fuzz/corpus/<name>/).
#
#   sh tools/fuzz.sh [SECONDS_PER_HARNESS] [HARNESS...]     (default 30 s, all)
#
# HARNESS is a name such as json or safetensors; 0 seconds only builds.
# Exits non-zero when any harness reports a crash, a leak, a sanitizer
# report, an allocation over the limit, an out-of-memory or a timeout.
# Exits 0 with a message when clang's libFuzzer is not available.
#
# Environment:
#   FUZZ_CC       compiler (default: clang, else clang-14 .. clang-19)
#   FUZZ_JOBS     harnesses built / run at once (default 2)
#   FUZZ_BUILD    output directory (default build/fuzz)
#   FUZZ_TIMEOUT  seconds one input may take (default 10)
#   FUZZ_MALLOC_MB  the largest single allocation allowed (default 128; the
#                 harnesses cap the library's own allocations at 64 MiB)
#   FUZZ_RSS_MB   RSS limit (default 2048)
#   FUZZ_FLAGS    extra libFuzzer flags (e.g. -seed=1)
#
# Nothing is written into the repository: new inputs go to
# $FUZZ_BUILD/work/<name>/ and crash reproducers to $FUZZ_BUILD/artifacts/.
# Reproduce one with: $FUZZ_BUILD/fuzz_<name> $FUZZ_BUILD/artifacts/<file>

set -u

SECS=${1:-30}
[ $# -gt 0 ] && shift
case $SECS in ''|*[!0-9]*) echo "usage: sh tools/fuzz.sh [SECONDS_PER_HARNESS] [HARNESS...]" >&2; exit 2 ;; esac

case $0 in */*) cd "${0%/*}/.." || exit 2 ;; *) cd .. || exit 2 ;; esac   # the repository root
OUT=${FUZZ_BUILD:-build/fuzz}
JOBS=${FUZZ_JOBS:-2}
TIMEOUT=${FUZZ_TIMEOUT:-10}
MALLOC_MB=${FUZZ_MALLOC_MB:-128}
RSS_MB=${FUZZ_RSS_MB:-2048}
EXTRA=${FUZZ_FLAGS:-}

CC=${FUZZ_CC:-}
if [ -z "$CC" ]; then
    for c in clang clang-19 clang-18 clang-17 clang-16 clang-15 clang-14; do
        if command -v "$c" >/dev/null 2>&1; then CC=$c; break; fi
    done
fi
if [ -z "$CC" ]; then
    echo "fuzz: skipped (no clang found; install clang for libFuzzer)"
    exit 0
fi

mkdir -p "$OUT" || exit 2
# Is libFuzzer (with ASan/UBSan) there?  Debian ships it with clang.
cat > "$OUT/probe.c" <<'EOF'
#include <stddef.h>
#include <stdint.h>
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { return n > 0 && d[0] == 0; }
EOF
if ! "$CC" -fsanitize=fuzzer,address,undefined -o "$OUT/probe" "$OUT/probe.c" >"$OUT/probe.log" 2>&1; then
    echo "fuzz: skipped ($CC cannot link -fsanitize=fuzzer,address,undefined; see $OUT/probe.log)"
    exit 0
fi

SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
CFLAGS="-g -O1 -std=c99 -D_POSIX_C_SOURCE=200809L -I. $SAN"

if [ $# -gt 0 ]; then
    HARNESSES=$*
else
    HARNESSES=$(for f in tests/fuzz/fuzz_*.c; do n=${f##*/fuzz_}; printf '%s ' "${n%.c}"; done)
fi
for h in $HARNESSES; do
    [ -f "tests/fuzz/fuzz_$h.c" ] || { echo "fuzz: no harness tests/fuzz/fuzz_$h.c" >&2; exit 2; }
done

# -- build: the library once (it is the slow part), then each harness ----
echo "fuzz: building with $CC ($("$CC" --version | head -n 1))"
printf '#define AESALIGN_IMPLEMENTATION\n#include "aesalign.h"\n' > "$OUT/aesalign_lib.c"
# (rebuilt when the header changed or the compiler / flags are not the same)
stamp="$CC $CFLAGS"
if [ ! -f "$OUT/aesalign_lib.o" ] || [ aesalign.h -nt "$OUT/aesalign_lib.o" ] ||
   [ "$(cat "$OUT/aesalign_lib.flags" 2>/dev/null)" != "$stamp" ]; then
    rm -f "$OUT/aesalign_lib.o"
    if ! "$CC" $CFLAGS -fsanitize=fuzzer-no-link -c -o "$OUT/aesalign_lib.o" "$OUT/aesalign_lib.c" 2>"$OUT/aesalign_lib.log"; then
        cat "$OUT/aesalign_lib.log" >&2
        echo "fuzz: FAILED to build the library"
        exit 1
    fi
    echo "$stamp" > "$OUT/aesalign_lib.flags"
fi

# Runs "$1 HARNESS" for every harness, $JOBS at a time.
for_each_harness() {
    n=0
    for h in $HARNESSES; do
        "$1" "$h" &
        n=$((n + 1))
        if [ $n -ge "$JOBS" ]; then wait; n=0; fi
    done
    wait
}

# A harness that calls the library's internal (static aes__*) functions, the
# JSON parser for one, compiles the implementation itself.
build_one() {
    h=$1
    if grep -q 'aes__' "tests/fuzz/fuzz_$h.c"; then
        "$CC" $CFLAGS -fsanitize=fuzzer -o "$OUT/fuzz_$h" "tests/fuzz/fuzz_$h.c" \
            -lm -lpthread >"$OUT/fuzz_$h.build.log" 2>&1
    else
        "$CC" $CFLAGS -fsanitize=fuzzer -DAES_FUZZ_SEPARATE_LIB -o "$OUT/fuzz_$h" "tests/fuzz/fuzz_$h.c" \
            "$OUT/aesalign_lib.o" -lm -lpthread >"$OUT/fuzz_$h.build.log" 2>&1
    fi
    echo $? > "$OUT/fuzz_$h.build.rc"
}

for_each_harness build_one
failed_build=0
for h in $HARNESSES; do
    if [ "$(cat "$OUT/fuzz_$h.build.rc" 2>/dev/null)" != 0 ]; then
        cat "$OUT/fuzz_$h.build.log" >&2
        echo "fuzz: FAILED to build fuzz_$h"
        failed_build=1
    fi
done
[ $failed_build -eq 0 ] || exit 1
if [ "$SECS" -eq 0 ]; then
    echo "fuzz: built $(echo $HARNESSES | wc -w) harnesses in $OUT (0 s: nothing run)"
    exit 0
fi

# -- run ------------------------------------------------------------------
mkdir -p "$OUT/artifacts" "$OUT/work" "$OUT/logs"

run_one() {
    h=$1
    work="$OUT/work/$h"
    rm -rf "$work"
    mkdir -p "$work"
    seeds="tests/fuzz/corpus/$h"
    [ -d "$seeds" ] || seeds=""
    # The first directory receives new inputs (a scratch copy); the seed
    # directory is only read.
    "$OUT/fuzz_$h" -max_total_time="$SECS" -timeout="$TIMEOUT" -rss_limit_mb="$RSS_MB" \
        -malloc_limit_mb="$MALLOC_MB" -print_final_stats=1 -artifact_prefix="$OUT/artifacts/$h-" \
        $EXTRA "$work" $seeds >"$OUT/logs/$h.log" 2>&1
    echo $? > "$OUT/logs/$h.rc"
}

for_each_harness run_one

# -- report ---------------------------------------------------------------
total_runs=0
nfail=0
nh=0
for h in $HARNESSES; do
    log="$OUT/logs/$h.log"
    rc=$(cat "$OUT/logs/$h.rc" 2>/dev/null || echo 1)
    runs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9][0-9]*\).*/\1/p' "$log" | tail -n 1)
    if [ -z "$runs" ]; then   # no final stats (a crash): the last status line
        runs=$(sed -n 's/^#\([0-9][0-9]*\)[^0-9].*/\1/p' "$log" | tail -n 1)
    fi
    [ -n "$runs" ] || runs=0
    result=ok
    why=$(grep -m 1 -E 'ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|libFuzzer)|runtime error:|^SUMMARY: |ALARM: working on the last Unit|out-of-memory|^fuzz: ' "$log")
    if [ "$rc" != 0 ] || [ -n "$why" ]; then
        result="FAILED (exit $rc): ${why:-see $log}"
        art=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        [ -n "$art" ] && result="$result; reproducer $art"
        nfail=$((nfail + 1))
    fi
    printf 'fuzz_%-12s %12s runs  %s\n' "$h" "$runs" "$result"
    total_runs=$((total_runs + runs))
    nh=$((nh + 1))
done
printf 'fuzz: %d harnesses, %s s each, %d runs in total, %d failed\n' "$nh" "$SECS" "$total_runs" "$nfail"
[ $nfail -eq 0 ]
