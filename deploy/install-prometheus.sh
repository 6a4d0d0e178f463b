#!/usr/bin/env bash
# Install Debian's prometheus package (the server and promtool) unless both are
# already on PATH. The scrape test runs the real binary as a plain process, so
# the package's own service must never start: installing it in a container or
# on CI has no init system to supervise it, and it would hold port 9090.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    echo "prometheus: $(prometheus --version 2>&1 | sed -n 1p)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

# invoke-rc.d consults policy-rc.d: exit code 101 forbids starting any service
# during the install. Add one only if the machine has none, and remove it after.
POLICY=/usr/sbin/policy-rc.d
ADDED_POLICY=""
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    ADDED_POLICY=1
fi
cleanup() {
    if [ -n "$ADDED_POLICY" ]; then
        $SUDO rm -f "$POLICY"
    fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    prometheus >/dev/null

# Should a service have started anyway (a machine with systemd ignores
# policy-rc.d), stop and disable it: only the test's own process may run.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
PIDFILE=/run/prometheus/prometheus.pid
if [ -s "$PIDFILE" ]; then
    $SUDO kill "$(cat "$PIDFILE")" 2>/dev/null || true
    $SUDO rm -f "$PIDFILE"
fi

command -v prometheus >/dev/null && command -v promtool >/dev/null
echo "prometheus: $(prometheus --version 2>&1 | sed -n 1p)"
