#!/usr/bin/env bash
# Make sure Redis (127.0.0.1:6379), RabbitMQ (127.0.0.1:5672) and PostgreSQL
# (127.0.0.1:5432: history in PostgreSQL, FLEET_POSTGRES_URL, and its tests) answer.
# Uses running servers as they are; starts installed ones; installs them on
# Debian/Ubuntu as root; otherwise says what to install.
set -euo pipefail

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {  # port, name, seconds
  local deadline=$((SECONDS + $3))
  until answers "$1"; do
    if ((SECONDS > deadline)); then echo "local-services: $2 did not answer on port $1" >&2; exit 1; fi
    sleep 0.5
  done
}

install_packages() {
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "local-services: installing $* with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    cat >&2 <<MSG
local-services: $* not installed. Install them (Debian/Ubuntu: sudo apt-get install $*;
macOS: brew install redis rabbitmq postgresql@15), or run them in containers with
  docker compose -f deploy/docker-compose.yml up -d redis rabbitmq postgres
MSG
    exit 1
  fi
}

if answers 6379; then
  echo "local-services: redis answers on 6379"
else
  command -v redis-server >/dev/null || install_packages redis-server
  echo "local-services: starting redis-server"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  wait_for 6379 redis 15
fi

if answers 5672; then
  echo "local-services: rabbitmq answers on 5672"
else
  command -v rabbitmq-server >/dev/null || install_packages rabbitmq-server
  echo "local-services: starting rabbitmq-server (takes 5-15 s)"
  # Every durable queue needs a file handle at boot: lift the soft limit (1024 on many
  # systems) to the hard one, or a broker with many conversations never finishes booting.
  (ulimit -n "$(ulimit -Hn)" 2>/dev/null; rabbitmq-server -detached)
  wait_for 5672 rabbitmq 90
fi

# PostgreSQL: tests connect as postgres to 127.0.0.1 without a password, as on the
# development machines, so a cluster installed here is set up that way (trust for local
# TCP connections only); one installed before is used as it is.
pg_version() { ls /etc/postgresql 2>/dev/null | sort -V | tail -1; }

if answers 5432; then
  echo "local-services: postgresql answers on 5432"
else
  if ! command -v pg_ctlcluster >/dev/null || [[ -z $(pg_version) ]]; then
    install_packages postgresql
    hba="/etc/postgresql/$(pg_version)/main/pg_hba.conf"
    sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+\s*$/\1trust/' "$hba"
  fi
  if ! answers 5432; then  # the package may have started it already
    echo "local-services: starting postgresql $(pg_version)"
    pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main start
  else
    pg_ctlcluster --skip-systemctl-redirect "$(pg_version)" main reload
  fi
  wait_for 5432 postgresql 30
fi
