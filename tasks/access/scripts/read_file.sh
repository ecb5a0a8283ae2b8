# shellcheck shell=sh
# A root-owned file's content; exit 2 when it does not exist.
# Run as: sh -c SCRIPT opsflow PATH
cat -- "$1" 2>/dev/null || exit 2
