#!/bin/sh
# Nightly ferry backup of every running container, for cron.
#
# Install:
#   install -m 0755 examples/cron-backup.sh /usr/local/sbin/ferry-cron-backup.sh
#   mkdir -p -m 0700 /backups
# and in /etc/crontab or a file in /etc/cron.d/ (these have a user field):
#   15 2 * * * root /usr/local/sbin/ferry-cron-backup.sh
# or, to back up elsewhere:
#   15 2 * * * root BACKUP_DIR=/srv/backups /usr/local/sbin/ferry-cron-backup.sh
#
# `ferry backup --all` puts every running container (those `docker ps` lists; ferry's own helper
# containers excepted) into ONE bundle named after the first of them, e.g.
# /backups/ferry-web_4-20261123T021500Z.tar for web and 4 others (ferry-web-<stamp>.tar when web
# is the only one). Stopped containers are not backed up. If any container fails, the whole run
# fails and no bundle is written: the bundle appears at its final name only when complete, and a
# failed run removes its temporary .ferry-*.partial file.
#
# Messages go to syslog (tag ferry-backup) when `logger` works, else to stderr (which cron mails).
# On failure everything ferry said also goes to stderr, and the script exits with ferry's exit
# code: 2 usage (also when no container is running), 4 engine unreachable or refused, 5 not
# found, 7 bundle, 8 disk full or permissions, 130 interrupted (see `ferry --help`). Old bundles
# are only deleted after a successful backup.
#
# Environment: BACKUP_DIR (default /backups), FERRY (default ferry), and ferry's own DOCKER_HOST.
set -eu

BACKUP_DIR=${BACKUP_DIR:-/backups}
FERRY=${FERRY:-ferry}
TAG=ferry-backup
# cron's PATH is minimal (/usr/bin:/bin); ferry installed with npm -g usually lives in /usr/local/bin.
PATH=$PATH:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin
export PATH

have_logger=0
command -v logger >/dev/null 2>&1 && have_logger=1

# log PRIORITY MESSAGE   (PRIORITY: info, warning, err)
log() {
  if [ "$have_logger" = 1 ] && logger -t "$TAG" -p "user.$1" -- "$2" 2>/dev/null; then
    :
  else
    printf '%s %s: %s\n' "$(date '+%Y-%m-%dT%H:%M:%S%z')" "$TAG" "$2" >&2
  fi
}

out=$(mktemp "${TMPDIR:-/tmp}/ferry-backup.XXXXXX")
err=$(mktemp "${TMPDIR:-/tmp}/ferry-backup.XXXXXX")
trap 'rm -f "$out" "$err"' EXIT
trap 'exit 130' INT TERM

log info "starting: $FERRY backup --all -o $BACKUP_DIR"
rc=0
# stdout: the result line ("backed up web, db (2 volumes) to /backups/...: 1.2 GiB in 40.1s");
# stderr: one line per step, warnings, and on failure "ferry: error: ..." and "ferry: hint: ...".
$FERRY backup --all -o "$BACKUP_DIR" >"$out" 2>"$err" || rc=$?

if [ "$rc" = 0 ]; then
  # The result, and warnings (e.g. bind mounts that were recorded but not copied); not every step.
  while IFS= read -r line; do
    if [ -n "$line" ]; then log info "$line"; fi
  done <"$out"
  grep 'warning:' "$err" | while IFS= read -r line; do log warning "$line"; done
else
  # Everything ferry said, steps included: what it was doing when it failed.
  cat "$out" "$err" | while IFS= read -r line; do
    if [ -n "$line" ]; then log err "$line"; fi
  done
  log err "FAILED: ferry backup exited with code $rc; older bundles were kept"
  # Make sure cron mails the failure even when the messages went to syslog.
  if [ "$have_logger" = 1 ]; then
    echo "$TAG: ferry backup failed with exit code $rc:" >&2
    cat "$out" "$err" >&2
  fi
  exit "$rc"
fi

# TODO(retention): replace this with `ferry prune` once it exists (it is not implemented yet).
# Until then, delete bundles older than 14 days by file age. Only ferry's bundle names match
# (hidden .ferry-*.partial temporaries of running backups do not).
find "$BACKUP_DIR" -name 'ferry-*.tar' -mtime +14 -delete

log info "done"
