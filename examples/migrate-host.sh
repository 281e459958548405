#!/bin/sh
# Move services from this host to a new one with ferry, in one cutover, with a safety bundle.
#
#   examples/migrate-host.sh NEWHOST CONTAINER...
#   FERRY=bin/ferry.js examples/migrate-host.sh newhost web db
#   MIGRATE_ARGS="--map-bind /srv=/data/srv --stop-timeout 60" examples/migrate-host.sh newhost web
#   examples/migrate-host.sh newhost --project shop          # a whole Compose stack
#
# NEWHOST is anything ssh understands: an alias from ~/.ssh/config (HostName, Port, User,
# IdentityFile and UserKnownHostsFile are honoured), user@host or host:port. Its host key must
# already be in known_hosts (ssh to it once, or pass FERRY_SSH_ACCEPT_NEW=1 to accept an unknown
# key; a changed key is always refused). The new host needs sshd and a Docker engine; it does not
# need ferry, nor the images: they travel with the containers.
#
# Steps:
#   1. a safety bundle of the containers on this host (SAFETY_DIR, default /var/backups/ferry),
#      read back and checked (--verify), so that whatever happens there is a restorable copy;
#   2. ferry migrate --stop-source: each old container is stopped cleanly, then its snapshot,
#      image and volumes are streamed straight into the new host's engine and the containers are
#      recreated and started there; the old ones stay stopped, so nothing written to them is left
#      behind (the downtime is the transfer: stop, copy, start);
#   3. on failure ferry removes what it created on the new host and starts the old containers
#      again; this script then says how to roll back by hand if needed.
#
# MIGRATE_ARGS: more `ferry migrate` options, split on spaces: the new host's layout
# (--map-bind, --map-port, --map-volume, --map-network), --stop-timeout for a slow database, ...
#
# Needs: ferry (or FERRY).
set -eu

FERRY=${FERRY:-ferry}
SAFETY_DIR=${SAFETY_DIR:-/var/backups/ferry}
say() { printf 'migrate-host: %s\n' "$*" >&2; }

[ $# -ge 2 ] || { say "usage: $0 NEWHOST CONTAINER..."; exit 2; }
target=$1
shift

accept=
[ "${FERRY_SSH_ACCEPT_NEW:-0}" = 1 ] && accept=--ssh-accept-new

say "1/2 safety bundle of $* into $SAFETY_DIR"
mkdir -p "$SAFETY_DIR"
# shellcheck disable=SC2086
$FERRY --quiet backup "$@" -o "$SAFETY_DIR" --verify
bundle=$(ls -t "$SAFETY_DIR"/ferry-*.tar | head -n 1)
say "    safety bundle: $bundle"

say "2/2 migrating $* to ssh://$target (the old containers stop before their snapshots and stay stopped)"
# shellcheck disable=SC2086
if $FERRY $accept migrate "$@" --to "ssh://$target" --stop-source ${MIGRATE_ARGS:-}; then
  case " $* " in
    *" --project "*) cleanup="docker compose down in the project's directory" ;;
    *) cleanup="docker rm $*" ;;
  esac
  say "done: $* run on $target; the old containers are stopped here (remove them once satisfied:"
  say "      $cleanup), and the safety bundle stays in $bundle"
else
  rc=$?
  say "FAILED (exit $rc). ferry removed what it had created on $target and started the old containers again."
  say "check them with: docker ps -a --filter name=$1"
  say "if anything is missing here, restore the safety bundle: $FERRY restore $bundle --on-conflict replace"
  exit "$rc"
fi
