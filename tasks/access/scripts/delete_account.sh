# shellcheck shell=sh
# Lock USER, drop its crontab and at jobs, kill its processes by uid, then remove it and
# its home; exit PROCESSES_LEFT_EXIT if its processes outlive SIGKILL.
# Run as: sh -c SCRIPT opsflow USER PROCESSES_LEFT_EXIT
set -eu
uid=$(id -u -- "$1")
# Locked and expired first, so no new login or job starts while its processes are killed.
usermod --lock --expiredate 1 -- "$1"
if command -v crontab >/dev/null; then crontab -r -u "$1" 2>/dev/null || true; fi
if command -v atq >/dev/null; then
  atq | awk -v u="$1" '$NF == u { print $1 }' | xargs -r atrm
fi
# By uid, whatever namespaces they run in (unshare, bwrap, rootless containers): real and
# effective uid, so a setuid program the user started goes too.
left() { ps -A -o pid=,stat=,ruid=,euid= | awk -v u="$uid" '($3 == u || $4 == u) && $2 !~ /^Z/'; }
i=0
while [ -n "$(left)" ] && [ "$i" -lt 50 ]; do
  pkill -KILL -U "$uid" || true
  pkill -KILL -u "$uid" || true
  sleep 0.1
  i=$((i + 1))
done
if [ -n "$(left)" ]; then
  pids=$(left | awk '{ print $1 }' | xargs)
  echo "processes of $1 (uid $uid) still run after SIGKILL: $pids" >&2
  exit "$2"
fi
userdel --force --remove -- "$1" 2>&1 | grep -v 'mail spool' >&2 || true
! getent passwd "$1" >/dev/null
