#!/bin/sh
# render-template.sh TEMPLATE OUTPUT [COMMAND...]
#
# Writes TEMPLATE to OUTPUT with every @@NAME@@ placeholder replaced by the environment
# variable NAME, and every @@NAME:-default@@ by NAME or else its default (comment lines
# are copied as they are), then execs COMMAND (e.g. nginx -g 'daemon off;'). Fails,
# naming the variable, when one without a default is unset, so a container never starts
# with a half-rendered config.
# The same rules as service/stack/nginx.py; used by docker-compose.yml for nginx/ and
# edge/. POSIX sh + awk only (the official nginx image has both).
set -eu

if [ "$#" -lt 2 ]; then
    echo "usage: $0 TEMPLATE OUTPUT [COMMAND...]" >&2
    exit 2
fi
template=$1
output=$2
shift 2

awk '
/^[ \t]*#/ { print; next }
{
    line = $0
    out = ""
    while (match(line, /@@[A-Z][A-Z0-9_]*(:-[^@]*)?@@/)) {
        name = substr(line, RSTART + 2, RLENGTH - 4)
        split_at = index(name, ":-")
        if (split_at) {
            fallback = substr(name, split_at + 2)
            name = substr(name, 1, split_at - 1)
        }
        if (name in ENVIRON) {
            value = ENVIRON[name]
        } else if (split_at) {
            value = fallback
        } else {
            printf "render-template: %s is not set (line %d of %s)\n", name, NR, FILENAME > "/dev/stderr"
            failed = 1
            exit 1
        }
        out = out substr(line, 1, RSTART - 1) value
        line = substr(line, RSTART + RLENGTH)
    }
    print out line
}
END { if (failed) exit 1 }
' "$template" > "$output.tmp" || { rm -f "$output.tmp"; exit 1; }
mv "$output.tmp" "$output"

if [ "$#" -gt 0 ]; then
    exec "$@"
fi
