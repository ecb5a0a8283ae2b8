# shellcheck shell=sh
# Remove GROUP unless an account is in it.
# Run as: sh -c SCRIPT opsflow GROUP
entry=$(getent group "$1") || { echo "already gone"; exit 0; }
gid=$(printf '%s' "$entry" | cut -d: -f3)
if [ -n "$(printf '%s' "$entry" | cut -d: -f4)" ] || getent passwd | cut -d: -f4 | grep -qx "$gid"
then echo "kept: it has members"; exit 0; fi
groupdel "$1" && echo removed
