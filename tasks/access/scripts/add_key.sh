# shellcheck shell=sh
# Run as the account: append the key line on standard input to its authorized_keys unless
# it is there; print changed or unchanged.
# Run as: sh -c SCRIPT opsflow HOME
set -eu
umask 077
mkdir -p -- "$1/.ssh"
f="$1/.ssh/authorized_keys"
IFS= read -r line
if [ -f "$f" ] && grep -qxF -- "$line" "$f"; then echo unchanged; exit 0; fi
if [ -s "$f" ] && [ -n "$(tail -c 1 -- "$f")" ]; then echo >> "$f"; fi
printf '%s\n' "$line" >> "$f"
echo changed
