# shellcheck shell=sh
# The account USER from the user database, and the start of its authorized_keys read as
# that user.
# Run as: sh -c SCRIPT opsflow USER MAX_BYTES
entry=$(getent passwd "$1") || exit 2
groups=$(id -nG "$1") || exit 3
printf '%s\n%s\n' "$entry" "$groups"
uid=$(printf '%s' "$entry" | cut -d: -f3)
gid=$(printf '%s' "$entry" | cut -d: -f4)
home=$(printf '%s' "$entry" | cut -d: -f6)
# As the user: a symlink in their home must not make root read another file. An unreadable
# file reads as no keys, so a user cannot stop their own revocation by breaking it; at most
# $2 bytes are read, so nor can an endless or huge one. The inner script's $1 and $2 are the
# inner sh's own arguments:
# shellcheck disable=SC2016
{ setpriv --reuid="$uid" --regid="$gid" --init-groups -- \
    sh -c '[ -f "$1" ] && exec head -c "$2" -- "$1"' sh "$home/.ssh/authorized_keys" "$2" \
    2>/dev/null || true; } | base64 -w0
echo
