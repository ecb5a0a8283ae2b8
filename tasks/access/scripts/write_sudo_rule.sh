# shellcheck shell=sh
# Put the sudoers text on standard input at PATH atomically, once visudo -c accepts it;
# exit REJECTED_EXIT (and say why) when it does not.
# Run as: sh -c SCRIPT opsflow PATH REJECTED_EXIT
set -eu
dir=$(dirname -- "$1")
# A name with a dot: sudo skips it, so a rule is never read before visudo has passed it.
tmp=$(mktemp -- "$dir/.opsflow.XXXXXX")
trap 'rm -f -- "$tmp"' EXIT
cat > "$tmp"
chmod 0440 -- "$tmp"
if ! out=$(visudo -c -f "$tmp" 2>&1); then
  printf 'visudo rejected the rule: %s\n' "$out" >&2
  exit "$2"
fi
mv -f -- "$tmp" "$1"
trap - EXIT
