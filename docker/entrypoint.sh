#!/usr/bin/env bash
# Entrypoint of the flow image: runs its arguments with `exec`, so flow is PID 1's direct child
# (compose sets `init: true`) and receives SIGTERM itself: it drains in-flight events and closes
# its files on `docker compose stop`.
#
# One special case keeps `flow keys generate DIR` idempotent on a persistent volume: when DIR
# already holds keys they are kept (new server keys would lock out every agent holding the old
# ones). Set FLOW_REGENERATE_KEYS=1 to replace them.
#
# FLOW_WAIT_FOR_KEYS=DIR waits (up to FLOW_WAIT_TIMEOUT seconds, default 60) until DIR holds keys,
# for orchestrators without compose's `service_completed_successfully`.
set -euo pipefail

if [[ $# -eq 0 ]]; then
    set -- flow --help
fi

if [[ -n "${FLOW_WAIT_FOR_KEYS:-}" ]]; then
    deadline=$((SECONDS + ${FLOW_WAIT_TIMEOUT:-60}))
    until [[ -f "$FLOW_WAIT_FOR_KEYS/server.key" && -f "$FLOW_WAIT_FOR_KEYS/client.key_secret" ]]; do
        if (( SECONDS >= deadline )); then
            echo "flow-entrypoint: no keys in $FLOW_WAIT_FOR_KEYS after ${FLOW_WAIT_TIMEOUT:-60} s" >&2
            exit 78
        fi
        sleep 1
    done
fi

if [[ $# -ge 4 && "$1" == flow && "$2" == keys && "$3" == generate ]]; then
    keys_dir=$4
    if [[ -f "$keys_dir/server.key_secret" && "${FLOW_REGENERATE_KEYS:-0}" != 1 ]]; then
        echo "flow-entrypoint: keeping the CURVE keys in $keys_dir (FLOW_REGENERATE_KEYS=1 replaces them)"
        exit 0
    fi
    if [[ "${FLOW_REGENERATE_KEYS:-0}" == 1 ]]; then
        rm -f "$keys_dir"/server.key "$keys_dir"/server.key_secret \
              "$keys_dir"/client.key "$keys_dir"/client.key_secret "$keys_dir"/authorized/client.key
    fi
fi

exec "$@"
