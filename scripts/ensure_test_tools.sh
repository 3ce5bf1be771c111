#!/usr/bin/env bash
# Make the tools some tests need available, if we can: `promtool` and `prometheus`
# (Debian's `prometheus` package) for the monitoring tests, `docker-compose` (Debian's
# v1 package, which validates compose files without an engine) for the deployment tests.
#
# When one is missing and we are root (or have passwordless sudo), install its Debian
# package. Otherwise print a note and succeed: those tests skip, unless
# N3HUB_REQUIRE_PROMTOOL=1 / N3HUB_REQUIRE_DOCKER_COMPOSE=1 (CI sets both).
#
# The prometheus package's maintainer scripts would start a service on :9090; the
# tests start their own Prometheus on a free port, so none may be left running.
# A temporary policy-rc.d forbids the start, and any service that started anyway
# is stopped and disabled afterwards.
set -uo pipefail

note() { echo "ensure_test_tools: $*" >&2; }

packages=()
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    packages+=(prometheus)
fi
if ! command -v docker-compose >/dev/null 2>&1; then
    packages+=(docker-compose)
fi
if [ "${#packages[@]}" -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    note "missing ${packages[*]} and not root (no passwordless sudo): skipping the install;"
    note "install Debian's '${packages[*]}' package(s) to run the tests that need them"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    note "missing ${packages[*]} and no apt-get here: install them yourself"
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

note "installing Debian's ${packages[*]}"
if ! "${as_root[@]}" apt-get update -q \
    || ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${packages[@]}"; then
    note "apt-get could not install ${packages[*]}; the tests that need them will skip"
    exit 0
fi

# Belt and braces: whatever the init system, leave no prometheus service running.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    "${as_root[@]}" systemctl disable --now prometheus.service >/dev/null 2>&1 || true
elif [ -x /etc/init.d/prometheus ]; then
    "${as_root[@]}" /etc/init.d/prometheus stop >/dev/null 2>&1 || true
fi

for tool in promtool docker-compose; do
    if command -v "$tool" >/dev/null 2>&1; then
        note "$("$tool" --version 2>&1 | head -n 1)"
    else
        note "installed ${packages[*]}, but $tool is still not on PATH"
    fi
done
exit 0
