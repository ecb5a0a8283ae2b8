# shellcheck shell=sh
# Run as the account: drop the lines whose last field is MARKER from its authorized_keys;
# print changed or unchanged.
# Run as: sh -c SCRIPT opsflow HOME MARKER
set -eu
f="$1/.ssh/authorized_keys"
[ -f "$f" ] || { echo unchanged; exit 0; }
tmp=$(mktemp -- "$f.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
awk -v m="$2" '$NF != m' "$f" > "$tmp"
if cmp -s -- "$f" "$tmp"; then echo unchanged; exit 0; fi
mv -f -- "$tmp" "$f"
trap - EXIT
echo changed
