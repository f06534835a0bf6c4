#!/usr/bin/env bash
# Make sure `promtool` and `prometheus` are on PATH (Debian's `prometheus` package),
# installing them only when promtool is missing. Never leaves a prometheus service
# running: the package's postinst would start one, so service starts are refused
# through policy-rc.d for the duration of the install (there is no systemd here).
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    exit 0
fi

fail() { echo "ensure-prometheus: $*" >&2; exit 1; }

if ! command -v apt-get >/dev/null 2>&1; then
    fail "promtool is missing and apt-get is not available; install Prometheus 2.x (promtool) by hand"
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || fail "promtool is missing and installing it needs root (no sudo)"
    SUDO="sudo"
fi

POLICY=/usr/sbin/policy-rc.d
ADDED_POLICY=""
if [ ! -e "$POLICY" ]; then
    # 101 = "action forbidden": invoke-rc.d will not start the service during install.
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    ADDED_POLICY=1
fi
cleanup() { if [ -n "$ADDED_POLICY" ]; then $SUDO rm -f "$POLICY"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && \
       $SUDO apt-get install -y -qq --no-install-recommends prometheus; } >/tmp/ensure-prometheus.log 2>&1; then
    fail "apt-get install prometheus failed (see /tmp/ensure-prometheus.log)"
fi

# Belt and braces: if a prometheus daemon was started by the package anyway, stop
# that one (by its pid file), never by name.
for pidfile in /run/prometheus/prometheus.pid /run/prometheus.pid; do
    if [ -s "$pidfile" ]; then
        $SUDO kill "$(cat "$pidfile")" 2>/dev/null || true
    fi
done

command -v promtool >/dev/null 2>&1 || fail "prometheus package installed but promtool is not on PATH"
echo "ensure-prometheus: $(promtool --version 2>&1 | head -n 1)"
