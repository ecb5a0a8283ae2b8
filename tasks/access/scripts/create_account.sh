# shellcheck shell=sh
# Create USER in GROUP (the group too, if missing); print its uid and whether the group
# existed or was created.
# Run as: sh -c SCRIPT opsflow USER GROUP
set -e
group=existed
if ! getent group "$2" >/dev/null; then groupadd --force --system "$2"; group=created; fi
if ! useradd --create-home --shell /bin/bash --password '*' --groups "$2" \
    --comment 'opsflow access grant' -- "$1"; then
  [ "$group" = existed ] || groupdel "$2"
  exit 1
fi
echo "$(id -u "$1") $group"
