#!/bin/sh
# Makes docs/xccdf-report.png, the picture docs/policies.md shows: this host assessed by the
# shipped baseline without a grid (examples/assess-xccdf.lua), written as ARF 1.1, rendered to
# HTML by OpenSCAP (`oscap xccdf generate report`), and that page opened in headless Chromium
# (Debian's chromium package). Run it by hand after changing lua/sacm/xccdf*; no spec needs it.
#
#   tools/xccdf-report-screenshot.sh [OUTPUT.png]
set -eu
cd "$(dirname "$0")/.."
out=${1:-docs/xccdf-report.png}
command -v chromium >/dev/null || { echo "xccdf-report-screenshot: apt-get install chromium first" >&2; exit 1; }
command -v oscap >/dev/null || { echo "xccdf-report-screenshot: apt-get install openscap-scanner first" >&2; exit 1; }
[ -x ./sacmrun ] || { echo "xccdf-report-screenshot: run make first" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
./sacmrun examples/assess-xccdf.lua policies "$tmp/arf.xml" arf
oscap ds rds-validate "$tmp/arf.xml"
oscap xccdf generate report --output "$tmp/report.html" "$tmp/arf.xml"
# a fresh profile in the temporary directory; no sandbox because this may run as root
chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$tmp/profile" \
    --window-size=1100,1900 --screenshot="$out" "file://$tmp/report.html" >/dev/null 2>&1
echo "xccdf-report-screenshot: wrote $out ($(wc -c <"$out") bytes)"
