# shellcheck shell=sh
# Run as an account by read_access_facts.sh: its marked key lines, or why they are not listed.
# Run as: sh -c SCRIPT sh AUTHORIZED_KEYS USER MAX_BYTES MAX_LINES MAX_LINE_BYTES
[ -f "$1" ] && [ ! -L "$1" ] || exit 0
size=$(wc -c < "$1") || exit 0
if [ "$size" -gt "$3" ]; then printf 'keys-oversized\t%s\t%s\n' "$2" "$size"; exit 0; fi
grep -E '[[:space:]]opsflow-grant-[0-9]+[[:space:]]*$' -- "$1" |
  LC_ALL=C awk -v name="$2" -v lines="$4" -v bytes="$5" '
    { n++; b += length($0) + 1 }
    n <= lines && b <= bytes { print "key\t" name "\t" $0; next }
    { over = 1 }
    END { if (over) print "keys-overflow\t" name "\t" n }'
