#!/bin/sh
# For PUBSUB_WRAP (bench/pubsub_run.lua): called as `vm_profile.sh ./sacmrun SCRIPT ARGS...`, runs
# the script under bench/lib/vm_profile.lua instead.
set -eu
bin=$1
shift
exec "$bin" "$(dirname "$0")/vm_profile.lua" "$@"
