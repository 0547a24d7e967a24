#!/bin/sh
# Runs every test program given on the command line, shows their output and
# ends with two lines adding them up: "N skipped" (cases that could not run
# here, each with its reason above) and, last, "N passed, N failed".
# AES_TEST_RUNNER, when set, is put before each program (for example
# "qemu-aarch64 -L /usr/aarch64-linux-gnu" or "valgrind -q --error-exitcode=9").
passed=0; failed=0; skipped=0; crashed=0
for t in "$@"; do
    out=$(${AES_TEST_RUNNER:-} "$t" 2>&1); rc=$?
    printf '%s\n' "$out"
    line=$(printf '%s\n' "$out" | grep -E '^[^ ]+: [0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' | tail -n 1)
    if [ -z "$line" ]; then
        echo "$t: crashed or printed no summary (exit $rc)"
        crashed=$((crashed + 1)); failed=$((failed + 1)); continue
    fi
    p=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed.*/\1/')
    f=$(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
    s=$(echo "$line" | sed -E 's/.* ([0-9]+) skipped$/\1/')
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "$t: exit $rc with no failed case"; failed=$((failed + 1))
    fi
done
echo "$skipped skipped"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
