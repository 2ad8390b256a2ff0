#!/usr/bin/env bash
# Make sure a Chromium the browser tests can drive exists at /usr/bin/chromium.
#
# Playwright cannot download its own browsers here (no access to its CDN), so the tests drive Debian's
# chromium package. As root (CI, containers) it is installed with apt; otherwise this prints how to get
# one and exits 0: the browser tests then skip, naming the missing browser.
set -euo pipefail

CHROMIUM="${CNNVIZ_CHROMIUM:-/usr/bin/chromium}"

if [ -x "$CHROMIUM" ]; then
    exit 0
fi

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: installing chromium with apt-get (for the browser tests)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends chromium >/dev/null
    if [ -x "$CHROMIUM" ]; then
        exit 0
    fi
    echo "ensure_chromium: apt-get finished but $CHROMIUM is still missing" >&2
    exit 1
fi

cat <<MSG
ensure_chromium: no browser at $CHROMIUM, and this user cannot install one, so the browser tests will skip.
  Debian/Ubuntu:  sudo apt-get install chromium
  elsewhere:      point CNNVIZ_CHROMIUM at a Chromium or Chrome binary
MSG
exit 0
