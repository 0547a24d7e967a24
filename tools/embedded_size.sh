#!/bin/sh
# embedded_size.sh - proves the library builds for a bare-metal target with
# no file system, no threads and no SIMD, and reports its code size.
#   sh tools/embedded_size.sh        (needs Debian's gcc-arm-none-eabi)
set -e
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/embedded.c" <<'C'
#define AES_NO_STDIO
#define AES_NO_THREADS
#define AES_NO_SIMD
#define AESALIGN_IMPLEMENTATION
#include "aesalign.h"
C
arm-none-eabi-gcc -std=c99 -Wall -Wextra -pedantic -Werror -mcpu=cortex-m4 -mthumb -mfloat-abi=hard \
    -mfpu=fpv4-sp-d16 -Os -ffunction-sections -fdata-sections -I. -c "$tmp/embedded.c" -o "$tmp/embedded.o"
arm-none-eabi-size "$tmp/embedded.o"
echo "embedded build ok (text = code bytes of the whole library for Cortex-M4, -Os)"
