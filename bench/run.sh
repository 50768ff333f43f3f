#!/usr/bin/env bash
# Siesta benchmark entry point (`make bench` / `make bench-quick`).
# Sets up what the benchmark needs and runs it: wrk, curl (and libev-dev for bjoern)
# from apt, the peers venv bench/.venv-peers from requirements-peers*.txt, the
# hyper-hello ceiling, then run.py (measures) and report.py (results/latest.md,
# charts). Assumes the repo's .venv with siesta already built (`make dev`);
# without it the Siesta rows say "skipped". Usage: bench/run.sh [--quick]
# [--only S1,S5] [--servers a,b]
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$BENCH")"
PEERS="$BENCH/.venv-peers"
PYTHON="${PYTHON:-python3}"
cd "$BENCH"

log() { printf '[bench] %s\n' "$*" >&2; }

apt_updated=""
apt_install() {
    if [ "$(id -u)" != 0 ]; then
        log "not root: install $* yourself (apt-get install $*)"
        return 1
    fi
    if [ -z "$apt_updated" ]; then
        apt-get update -qq >/dev/null && apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# 1. wrk for S1/S6/S7 (required), curl for S4 and libev-dev to build bjoern (optional).
if ! command -v wrk >/dev/null 2>&1; then
    log "installing wrk"
    apt_install wrk || { log "wrk is required"; exit 1; }
fi
if ! command -v curl >/dev/null 2>&1; then
    log "installing curl (S4's download client)"
    apt_install curl || log "curl not installed: S4 reads with the slower Python client"
fi
if ! dpkg -s libev-dev >/dev/null 2>&1; then
    log "installing libev-dev (for bjoern)"
    apt_install libev-dev || log "libev-dev not installed: bjoern will not build"
fi

# 2. The peers venv, rebuilt when the requirement files change.
stamp="$(cat requirements-peers.txt requirements-peers-optional.txt | sha256sum | cut -c1-16)"
if [ ! -x "$PEERS/bin/python" ] || [ "$(cat "$PEERS/.stamp" 2>/dev/null)" != "$stamp" ]; then
    log "creating $PEERS"
    "$PYTHON" -m venv "$PEERS"
    "$PEERS/bin/pip" install -q --upgrade pip
    "$PEERS/bin/pip" install -q -r requirements-peers.txt
    status="{"
    sep=""
    while read -r spec extra; do
        case "$spec" in ''|'#'*) continue ;; esac
        name="${spec%%==*}"
        log "trying optional peer $spec $extra"
        if out="$("$PEERS/bin/pip" install -q $extra "$spec" 2>&1)"; then
            status="$status$sep\"$name\": \"ok\""
        else
            reason="$(printf '%s\n' "$out" | grep -m1 -iE 'error:|fatal' | tr -d '"\\' | cut -c1-160)"
            log "$name did not install: $reason"
            status="$status$sep\"$name\": \"failed: ${reason:-see pip output}\""
        fi
        sep=", "
    done < requirements-peers-optional.txt
    printf '%s}\n' "$status" > "$PEERS/install-status.json"
    echo "$stamp" > "$PEERS/.stamp"
fi

# 3. The pure-Rust ceiling.
if ! cargo build --release --quiet --manifest-path hyper-hello/Cargo.toml; then
    log "hyper-hello did not build: the scenarios run without the ceilings"
fi

# 4. Siesta itself.
if [ ! -x "$REPO/.venv/bin/siesta" ]; then
    log "no $REPO/.venv/bin/siesta (run 'make dev'): Siesta rows will say skipped"
else
    # Byte-compiled, as `make dev` and a wheel install leave it: a .py edited
    # since would otherwise be compiled by every master at its start.
    "$REPO/.venv/bin/python" -m compileall -q "$REPO/python/siesta" || true
fi

# Thousands of sockets in S6-S8: lift the descriptor limit for servers and clients.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

"$PEERS/bin/python" run.py "$@"
"$PEERS/bin/python" report.py
