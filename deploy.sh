#!/usr/bin/env bash
# deploy.sh: check the configuration, start or update Vantage with compose,
# wait until it is ready and print a short status. Safe to run again: an
# unchanged setup is left running; a changed config or .env is reloaded in
# the running agent (SIGHUP: what did not change keeps running, eBPF
# programs stay attached); a changed image or compose setting recreates
# the container.
#
#   ./deploy.sh [CONFIG]        CONFIG: a file in ./config (default: $VANTAGE_CONFIG_FILE or unified.toml)
#
# Per-host overrides win over .env:  SERVER_NAME=exchange-02 APP_NAME=exchange-api ./deploy.sh exchange.toml
# Other settings: ENV_FILE (default .env), VANTAGE_VERSION (image tag, default latest),
# LISTEN_ADDR (where /-/ready is polled), READY_TIMEOUT (seconds, default 90),
# VANTAGE_CONTAINER (container and compose project name, default vantage).
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
export VANTAGE_CONTAINER=${VANTAGE_CONTAINER:-vantage}
CONTAINER=$VANTAGE_CONTAINER
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

# 1. The env file the agent reads: $ENV_FILE with this run's SERVER_NAME and
#    APP_NAME, in ./env, which the container mounts as a directory (like
#    ./config) so that a reload sees the new file. Written next to the old one
#    and moved into place only once the check passed.
mkdir -p env
chmod 0700 env
new_env=env/.vantage.env.new
{
    cat "$ENV_FILE"
    echo
    echo "# deploy.sh: this run's per-host values"
    echo "SERVER_NAME=\"$SERVER_NAME\""
    echo "APP_NAME=\"$APP_NAME\""
} > "$new_env"
chmod 0600 "$new_env"

# 2. The configuration, checked by the image that will run it, with this
#    host's variables. Nothing is changed when it is invalid.
say "checking config/$CONFIG with $IMAGE"
if ! docker run --rm --network none --read-only --cap-drop ALL --security-opt no-new-privileges:true \
    -v "$PWD/config:/etc/vantage:ro" -v "$PWD/env:/etc/vantage-env:ro" -e LISTEN_ADDR \
    "$IMAGE" check --config "/etc/vantage/$CONFIG" --env-file /etc/vantage-env/.vantage.env.new; then
    rm -f "$new_env"
    die "config/$CONFIG is invalid (see above); nothing was changed"
fi
mv -f "$new_env" env/vantage.env
config_hash=$(cat "config/$CONFIG" env/vantage.env | sha256sum | cut -c1-16)

# 3. Start or update. Compose recreates the container only when the image or
#    the compose settings changed; otherwise a changed config or env file is
#    reloaded in the running agent.
before=$(docker container inspect -f '{{.Id}}' "$CONTAINER" 2>/dev/null || true)
export ENV_FILE
say "starting or updating $CONTAINER with ${COMPOSE[*]}"
if ! out=$("${COMPOSE[@]}" -p "$CONTAINER" --env-file "$ENV_FILE" up -d --remove-orphans 2>&1); then
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
after=$(docker container inspect -f '{{.Id}}' "$CONTAINER" 2>/dev/null || true)

# The number of reloads the agent reports on its status ("config: N reloads").
reloads() {
    { docker exec "$CONTAINER" /vantage probe --listen "$LISTEN_ADDR" --status 2>/dev/null || true; } |
        sed -n 's/^config: \([0-9]*\) reloads.*/\1/p'
}

if [ -z "$before" ] || [ "$before" != "$after" ]; then
    say "container ${before:+re}created"
elif [ "$(cat env/deployed 2>/dev/null || true)" = "$config_hash" ]; then
    say "image, compose settings, config and env file unchanged: nothing to do"
else
    # SIGHUP rather than a restart: only the changed sources and sinks restart.
    count=$(reloads)
    [ -n "$count" ] || die "cannot read the running agent's status on $LISTEN_ADDR, so cannot tell a reload happened (docker logs $CONTAINER)"
    say "config or env file changed: reloading the running agent"
    docker kill -s HUP "$CONTAINER" >/dev/null
    deadline=$((SECONDS + 30))
    until [ "$(reloads)" != "$count" ]; do
        [ "$SECONDS" -lt "$deadline" ] || die "the agent did not report the reload within 30 s (docker logs $CONTAINER)"
        sleep 0.5
    done
    status=$(docker exec "$CONTAINER" /vantage probe --listen "$LISTEN_ADDR" --status 2>/dev/null || true)
    if failed=$(grep '^config reload FAILED' <<<"$status"); then
        die "$failed"
    fi
    say "reloaded"
fi
echo "$config_hash" > env/deployed

# 4. Wait until every source has collected once.
say "waiting for http://$LISTEN_ADDR/-/ready"
deadline=$((SECONDS + ${READY_TIMEOUT:-90}))
until docker exec "$CONTAINER" /vantage probe --listen "$LISTEN_ADDR" >/dev/null 2>&1; do
    if [ "$(docker inspect -f '{{.State.Running}}' "$CONTAINER" 2>/dev/null)" != "true" ]; then
        docker logs --tail 30 "$CONTAINER" >&2 || true
        die "the container is not running (logs above)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        docker logs --tail 30 "$CONTAINER" >&2 || true
        die "not ready after ${READY_TIMEOUT:-90} s (logs above; the status page is at http://$LISTEN_ADDR/)"
    fi
    sleep 1
done

# 5. A short status from /api/v1/status.
say "ready; status:"
status=$(docker exec "$CONTAINER" /vantage probe --listen "$LISTEN_ADDR" --status 2>/dev/null || true)
if [ -z "$status" ]; then
    die "ready, but /api/v1/status could not be read"
fi
echo "$status"
say "done: status page at http://$LISTEN_ADDR/"
