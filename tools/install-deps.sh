#!/bin/sh
# Installs the Debian packages in tools/debian-packages.txt that are missing. As root it runs
# apt-get; otherwise it prints the exact command to run and fails, so nothing is half set up.
# Quiet when nothing is missing; safe to run again.
#
# Some packages (prosody, ejabberd, nginx, postgresql) are servers that the specs start privately on loopback. Their
# maintainer scripts would start a system daemon; that daemon is not wanted (a leftover server is a
# defect), so the install runs under a policy-rc.d that forbids starting services (exit 101, see
# /usr/share/doc/init-system-helpers/README.policy-rc.d.gz). An existing policy-rc.d is left as it
# is; one this script creates is removed again, also when it is interrupted. If a daemon of a
# package installed here runs anyway afterwards (a systemd socket, say), it is stopped and disabled.
set -eu
here=$(dirname "$0")
policy=/usr/sbin/policy-rc.d

# server packages: package name, service name, the system user its daemon runs as
servers="prosody:prosody:prosody ejabberd:ejabberd:ejabberd nginx-light:nginx:www-data postgresql:postgresql:postgres"

missing=""
# one package per line; "#" starts a comment, also after a name (names never hold spaces)
# shellcheck disable=SC2013
for pkg in $(sed -e 's/#.*//' "$here/debian-packages.txt"); do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing="$missing $pkg"
    fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages; run as root:" >&2
    echo "  apt-get install -y$missing" >&2
    exit 1
fi

created_policy=""
remove_policy() {
    if [ -n "$created_policy" ]; then
        rm -f "$policy"
        created_policy=""
    fi
}
trap remove_policy EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
# noclobber: create it only if there is none, without a window between the test and the write
if (set -C; printf '#!/bin/sh\n# installed by sacmrun tools/install-deps.sh while it runs apt-get\nexit 101\n' >"$policy") 2>/dev/null; then
    created_policy=1
    chmod 755 "$policy"
fi

echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
remove_policy

# A daemon of a server package installed just now must not be left running.
leftover=""
for entry in $servers; do
    pkg=${entry%%:*}
    rest=${entry#*:}
    service=${rest%%:*}
    user=${rest#*:}
    case " $missing " in *" $pkg "*) ;; *) continue ;; esac
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        # also keeps it from starting at the next boot
        systemctl disable --now "$service" >/dev/null 2>&1 || true
    fi
    if pgrep -u "$user" >/dev/null 2>&1; then
        echo "stopping the system $service service that the package started" >&2
        if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
            systemctl stop "$service" || true
        elif [ -x "/etc/init.d/$service" ]; then
            "/etc/init.d/$service" stop || true
        fi
        if pgrep -u "$user" >/dev/null 2>&1; then
            leftover="$leftover $service($(pgrep -d, -u "$user"))"
        fi
    fi
done
if [ -n "$leftover" ]; then
    echo "error: system daemons still running after the install:$leftover; stop them by hand" >&2
    exit 1
fi
