#!/bin/sh
# Makes docs/report.png, the picture of an HTML report docs/guide.md shows: `make demo`'s grid
# assesses this host and writes its report as HTML, and headless Chromium (Debian's chromium
# package) renders it. Run it by hand after changing lua/sacm/report/html.lua; it is not part of
# `make test` (Chromium is a large install that no spec needs).
#
#   tools/report-screenshot.sh [OUTPUT.png]
set -eu
cd "$(dirname "$0")/.."
out=${1:-docs/report.png}
command -v chromium >/dev/null || { echo "report-screenshot: apt-get install chromium first" >&2; exit 1; }
[ -x ./sacmrun ] || { echo "report-screenshot: run make first" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
./sacmrun examples/demo.lua "$tmp/report.html" >/dev/null
# a fresh profile in the temporary directory; no sandbox because this may run as root
chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$tmp/profile" \
    --window-size=1200,1500 --screenshot="$out" "file://$tmp/report.html" >/dev/null 2>&1
echo "report-screenshot: wrote $out"
