#!/usr/bin/env bash
# deploy.sh: check the configuration, start or update Vantage with compose,
# wait until it is ready and print a short status. Safe to run again: an
# unchanged setup is left running; a changed config or .env restarts it.
#
#   ./deploy.sh [CONFIG]        CONFIG: a file in ./config (default: $VANTAGE_CONFIG_FILE or unified.toml)
#
# Per-host overrides win over .env:  SERVER_NAME=exchange-02 APP_NAME=exchange-api ./deploy.sh exchange.toml
# Other settings: ENV_FILE (default .env), VANTAGE_VERSION (image tag, default latest),
# LISTEN_ADDR (where /-/ready is polled), READY_TIMEOUT (seconds, default 90).
#
# Docker Engine 23.0 or later: docker-compose.yml grants CAP_BPF and CAP_PERFMON,
# which 20.10 and older refuse by name (this script then says what to do).
set -euo pipefail
cd "$(dirname "$0")"

die() { echo "deploy: $*" >&2; exit 1; }
say() { echo "deploy: $*"; }

ENV_FILE=${ENV_FILE:-.env}
[ -f "$ENV_FILE" ] || die "$ENV_FILE not found: copy .env.example to .env and fill it in"

# Load the env file without overriding what the caller set (compose's rule).
while IFS= read -r line || [ -n "$line" ]; do
    line=${line%$'\r'}
    case "$line" in '' | '#'*) continue ;; esac
    [[ "$line" == *=* ]] || continue
    key=${line%%=*}
    key=${key#export }
    key=$(echo "$key" | tr -d '[:space:]')
    [[ "$key" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "$ENV_FILE: bad line: $line"
    value=${line#*=}
    # Strip one pair of surrounding quotes.
    if [[ "$value" =~ ^\"(.*)\"$ || "$value" =~ ^\'(.*)\'$ ]]; then value=${BASH_REMATCH[1]}; fi
    if [ -z "${!key+set}" ]; then export "$key=$value"; fi
done < "$ENV_FILE"

CONFIG=${1:-${VANTAGE_CONFIG_FILE:-unified.toml}}
CONFIG=${CONFIG#config/}
[ -f "config/$CONFIG" ] || die "config/$CONFIG not found (files: $(cd config && echo *.toml))"
export VANTAGE_CONFIG_FILE=$CONFIG
export VANTAGE_VERSION=${VANTAGE_VERSION:-latest}
export LISTEN_ADDR=${LISTEN_ADDR:-127.0.0.1:12345}
export SERVER_NAME=${SERVER_NAME:-$(hostname)}
export APP_NAME=${APP_NAME:-}
IMAGE="vantage:$VANTAGE_VERSION"

command -v docker >/dev/null || die "docker is not installed (Debian: apt-get install docker.io), or use deploy/vantage.service"
docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon: is dockerd running, and may this user use it?"

if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null; then
    COMPOSE=(docker-compose)
else
    die "neither 'docker compose' nor 'docker-compose' found (Debian: apt-get install docker-compose)"
fi

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    if command -v cargo >/dev/null && [ -d xtask ]; then
        say "image $IMAGE missing: building it with cargo xtask docker"
        cargo xtask docker
    else
        die "image $IMAGE missing: build it with 'cargo xtask docker' (or 'docker build -t $IMAGE .'), or 'docker load -i vantage.tar'"
    fi
fi

# 1. The configuration, checked by the image that will run it, with this
#    host's variables. Nothing is started when it is invalid.
say "checking config/$CONFIG with $IMAGE"
check_env=()
for var in SERVER_NAME APP_NAME LISTEN_ADDR; do check_env+=(-e "$var"); done
if ! docker run --rm --network none --read-only --cap-drop ALL --security-opt no-new-privileges:true \
    -v "$PWD/config:/etc/vantage:ro" -v "$PWD/$ENV_FILE:/etc/vantage.env:ro" "${check_env[@]}" \
    "$IMAGE" check --config "/etc/vantage/$CONFIG" --env-file /etc/vantage.env; then
    die "config/$CONFIG is invalid (see above); nothing was changed"
fi

# 2. Start or update. The hash of the config and env file is passed to the
#    container, so a changed file recreates it and an unchanged one does not.
VANTAGE_CONFIG_HASH=$(cat "config/$CONFIG" "$ENV_FILE" | sha256sum | cut -c1-16)
VANTAGE_CONFIG_HASH=$VANTAGE_CONFIG_HASH-$SERVER_NAME-$APP_NAME
export VANTAGE_CONFIG_HASH ENV_FILE
say "starting or updating with ${COMPOSE[*]} (config hash $VANTAGE_CONFIG_HASH)"
if ! out=$("${COMPOSE[@]}" -p vantage --env-file "$ENV_FILE" up -d --remove-orphans 2>&1); then
    echo "$out" >&2
    if grep -q 'unknown capability' <<<"$out"; then
        # Engines 20.10 and older refuse CAP_BPF/CAP_PERFMON by name; 23.0
        # and later know them (checked with Debian 13's dockerd 26.1).
        die "this Docker Engine ($(docker version --format '{{.Server.Version}}')) does not know CAP_BPF/CAP_PERFMON (Docker Engine 23.0 and later do). Upgrade Docker Engine (Debian 13's docker.io, or Docker's packages); or run Vantage with deploy/vantage.service; or, if CAP_SYS_ADMIN is acceptable on this host, replace BPF and PERFMON with SYS_ADMIN in docker-compose.yml's cap_add (it holds both, and this engine's seccomp profile allows bpf() and perf_event_open() only with it)"
    fi
    if grep -q 'unable to apply caps' <<<"$out"; then
        die "the Docker daemon cannot grant one of the capabilities in docker-compose.yml (it runs without it itself, e.g. nested in a container)"
    fi
    die "${COMPOSE[*]} up failed"
fi

# 3. Wait until every source has collected once.
say "waiting for http://$LISTEN_ADDR/-/ready"
deadline=$((SECONDS + ${READY_TIMEOUT:-90}))
until docker exec vantage /vantage probe --listen "$LISTEN_ADDR" >/dev/null 2>&1; do
    if [ "$(docker inspect -f '{{.State.Running}}' vantage 2>/dev/null)" != "true" ]; then
        docker logs --tail 30 vantage >&2 || true
        die "the container is not running (logs above)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        docker logs --tail 30 vantage >&2 || true
        die "not ready after ${READY_TIMEOUT:-90} s (logs above; the status page is at http://$LISTEN_ADDR/)"
    fi
    sleep 1
done

# 4. A short status from /api/v1/status.
say "ready; status:"
status=$(docker exec vantage /vantage probe --listen "$LISTEN_ADDR" --status 2>/dev/null || true)
if [ -z "$status" ]; then
    die "ready, but /api/v1/status could not be read"
fi
echo "$status"
say "done: status page at http://$LISTEN_ADDR/"
