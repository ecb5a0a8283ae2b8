# shellcheck shell=sh
# Every account in the group, its opsflow-marked key lines, and every sudoers file named
# opsflow-*, one tab-separated line each.
# Run as: sh -c SCRIPT opsflow GROUP SUDOERS_DIR KEY_LINES_SCRIPT MAX_BYTES MAX_LINES MAX_LINE_BYTES
group=$(getent group "$1") || group=
gid=$(printf '%s' "$group" | cut -d: -f3)
members=$(printf '%s' "$group" | cut -d: -f4)
getent passwd | while IFS=: read -r name _ uid pgid _ home _; do
  case ",$members," in
    *",$name,"*) printf 'account\t%s\t%s\t%s\n' "$name" "$uid" "$home" ;;
    *) if [ -n "$gid" ] && [ "$pgid" = "$gid" ]; then
         printf 'account\t%s\t%s\t%s\n' "$name" "$uid" "$home"
       fi ;;
  esac
  # As the account itself: a link it planted in its home (~/.ssh -> /root/.ssh) must not
  # make root read, and report as this account's, another account's keys.
  setpriv --reuid="$uid" --regid="$pgid" --init-groups -- sh -c "$3" sh \
    "$home/.ssh/authorized_keys" "$name" "$4" "$5" "$6" </dev/null 2>/dev/null
done
for f in "$2"/opsflow-*; do
  if [ ! -f "$f" ] || [ -L "$f" ]; then continue; fi
  printf 'sudo\t%s\t%s\n' "${f##*/}" "$(base64 -w0 < "$f")"
done
exit 0
