#!/usr/bin/env bash
# Make `promtool` and `prometheus` available for the monitoring tests, if we can.
#
# When promtool is missing and we are root (or have passwordless sudo), install
# Debian's `prometheus` package, which ships both binaries. Otherwise print a note
# and succeed: the tests skip without promtool, unless N3HUB_REQUIRE_PROMTOOL=1.
#
# The package's maintainer scripts would start a prometheus service on :9090; the
# tests start their own Prometheus on a free port, so none may be left running.
# A temporary policy-rc.d forbids the start, and any service that started anyway
# is stopped and disabled afterwards.
set -uo pipefail

note() { echo "ensure_promtool: $*" >&2; }

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    note "promtool not found and not root (no passwordless sudo): skipping the install;"
    note "install Debian's 'prometheus' package (or put promtool on PATH) to run the monitoring tests"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    note "promtool not found and no apt-get here: install Prometheus's promtool yourself"
    exit 0
fi

policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
    # Exit status 101 means "action forbidden" to invoke-rc.d and deb-systemd-invoke.
    if printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null \
        && "${as_root[@]}" chmod 755 "$policy"; then
        made_policy=1
    fi
fi
# shellcheck disable=SC2317  # called by the EXIT trap
remove_policy() {
    if [ "$made_policy" -eq 1 ]; then
        "${as_root[@]}" rm -f "$policy"
    fi
}
trap remove_policy EXIT

note "installing Debian's prometheus package (for promtool)"
if ! "${as_root[@]}" apt-get update -q \
    || ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends prometheus; then
    note "apt-get could not install prometheus; the monitoring tests will skip"
    exit 0
fi

# Belt and braces: whatever the init system, leave no prometheus service running.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    "${as_root[@]}" systemctl disable --now prometheus.service >/dev/null 2>&1 || true
elif [ -x /etc/init.d/prometheus ]; then
    "${as_root[@]}" /etc/init.d/prometheus stop >/dev/null 2>&1 || true
fi

if command -v promtool >/dev/null 2>&1; then
    note "$(promtool --version 2>&1 | head -n 1)"
else
    note "the prometheus package installed, but promtool is still not on PATH"
fi
exit 0
