#!/usr/bin/env bash
# Install (if missing) and start a private Docker engine in the background, or stop it.
#
#   scripts/docker-engine.sh start   # prints: export DOCKER_HOST=unix:///.../docker.sock
#   eval "$(scripts/docker-engine.sh start)"
#   scripts/docker-engine.sh stop
#   scripts/docker-engine.sh status
#
# Why its own --pidfile, --data-root and --exec-root: a second engine, or a stale
# /var/run/docker.pid, would otherwise stop this one.
# No bridge network and no iptables: containers run with network "none" (builds may use "host").
# The Debian mirror is read from /etc/apt/sources.list.d/debian.sources at run time; no host
# name is written here. Override the location with HARNESS_DOCKER_ROOT.
set -euo pipefail

ROOT="${HARNESS_DOCKER_ROOT:-/var/lib/harness-docker}"
SOCK="$ROOT/run/docker.sock"
PIDFILE="$ROOT/run/dockerd.pid"
LOG="$ROOT/dockerd.log"
DOCKERD="${HARNESS_DOCKERD:-/usr/sbin/dockerd}"
WAIT_S="${HARNESS_DOCKER_WAIT_S:-60}"

log() { echo "docker-engine: $*" >&2; }

running() {
  [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

socket_ready() {
  [[ -S "$SOCK" ]] && DOCKER_HOST="unix://$SOCK" /usr/bin/docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

install_engine() {
  if [[ -x "$DOCKERD" && -x /usr/bin/docker ]]; then
    return
  fi
  log "installing Debian's docker.io (dockerd and a BuildKit-capable client)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq docker.io >&2
  # Debian's package may try to start a system service; this engine is started by hand below.
}

start() {
  install_engine
  mkdir -p "$ROOT/run" "$ROOT/data" "$ROOT/exec"
  if running && socket_ready; then
    log "already running (pid $(cat "$PIDFILE"))"
  else
    if running; then
      log "pid $(cat "$PIDFILE") is alive but the socket does not answer yet; waiting"
    else
      rm -f "$SOCK" "$PIDFILE"
      log "starting $DOCKERD (log: $LOG)"
      setsid "$DOCKERD" \
        --iptables=false --ip6tables=false --bridge=none \
        --data-root "$ROOT/data" --exec-root "$ROOT/exec" \
        --pidfile "$PIDFILE" -H "unix://$SOCK" \
        >>"$LOG" 2>&1 </dev/null &
    fi
    for ((i = 0; i < WAIT_S * 2; i++)); do
      if socket_ready; then break; fi
      sleep 0.5
    done
    if ! socket_ready; then
      log "the engine did not answer on $SOCK within ${WAIT_S}s; last log lines:"
      tail -n 20 "$LOG" >&2 || true
      exit 1
    fi
    log "ready: $(DOCKER_HOST="unix://$SOCK" /usr/bin/docker version --format '{{.Server.Version}}')"
  fi
  echo "export DOCKER_HOST=unix://$SOCK"
}

stop() {
  if ! running; then
    log "not running"
    rm -f "$PIDFILE"
    return
  fi
  local pid
  pid="$(cat "$PIDFILE")"
  log "stopping pid $pid"
  kill -TERM "$pid"
  for ((i = 0; i < 60; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid ignored SIGTERM for 30s; sending SIGKILL"
    kill -KILL "$pid"
  fi
  rm -f "$PIDFILE" "$SOCK"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if running && socket_ready; then
      echo "running: pid $(cat "$PIDFILE"), DOCKER_HOST=unix://$SOCK"
    else
      echo "not running"; exit 1
    fi
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
