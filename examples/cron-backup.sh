#!/bin/sh
# Nightly ferry backup of every running container (or those a label filter selects), verified,
# with rotation. For cron, or for the systemd timer in examples/systemd/.
#
# Install:
#   install -m 0755 examples/cron-backup.sh /usr/local/sbin/ferry-cron-backup.sh
#   mkdir -p -m 0700 /backups
# and in /etc/crontab or a file in /etc/cron.d/ (these have a user field):
#   15 2 * * * root /usr/local/sbin/ferry-cron-backup.sh
# or, with settings (or put them in /etc/ferry/backup.env and use the systemd timer):
#   15 2 * * * root BACKUP_DIR=/srv/backups FERRY_NOTIFY_URL=https://hc-ping.com/<uuid> /usr/local/sbin/ferry-cron-backup.sh
#
# Settings in ferry's config file: install examples/ferry.toml as /etc/ferry/ferry.toml (or name
# one with FERRY_CONFIG) and the job takes from it what the environment below does not set:
#   [backup] output      the store, when BACKUP_DIR is not set
#   [backup] filter      which containers: e.g. ["label=backup=nightly"] backs up only the
#                        containers labelled backup=nightly (FERRY_FILTER=label=backup=nightly
#                        does the same from the environment)
#   [backup] compress, pre-exec, exclude-path, notify-url, ...   as for `ferry backup`
#   [prune] keep-*       the rotation, when none of KEEP_DAILY, KEEP_WEEKLY, KEEP_MONTHLY is set
# `ferry config` shows what the file and the FERRY_* variables give. Per-container settings
# stay in labels (below).
#
# What it runs:
#   1. ferry backup --all -o "$BACKUP_DIR" --verify --quiet [--notify-url ...] [--encrypt ...]
#      (and, from the config file or FERRY_*, --filter, --compress, ...)
#      Every running container (those `docker ps` lists; ferry's own helpers excepted; with a
#      filter, those it selects) gets its
#      OWN bundle, ferry-<container>-<UTC time>.tar (containers that refer to each other, such as
#      a sidecar in another's network, share one), and each bundle is read back and checked
#      (`ferry verify`) before it counts; one that fails is renamed to <name>.tar.corrupt. A
#      container that fails does not cost the others their backup. A volume that lost more than
#      half of its data since the previous night's bundle is logged as a warning (look at the
#      service before the rotation removes the bundles that still hold it). Stopped containers are not
#      backed up. Per-container settings are best set as labels on the containers (see
#      docs/commands.md, Labels): ferry.pre-exec / ferry.post-exec (a database dump before the snapshot),
#      ferry.consistency=stop and ferry.stop-timeout (a database to stop, not pause),
#      ferry.exclude=true (a container to leave out).
#   2. ferry prune "$BACKUP_DIR" --keep-daily 7 --keep-weekly 4 --keep-monthly 6
#      (or the config file's [prune] keep-* rules) restic-style rotation, per container: the
#      newest bundle of each of the last 7 days, 4 ISO weeks and 6 months that have one is kept,
#      and so is each container's newest bundle. It
#      runs after a full or a partial (exit 3) backup, never after a run where nothing was backed
#      up, so a broken backup never thins out the bundles you would restore from.
#
# Exit status: 0 when every container was backed up and verified and the prune went through.
# 3 (partial): some containers failed -- a pre-exec hook, a bundle that failed verification, ...
# (named in the log); the others were backed up and verified, and pruning still ran. When every
# container failed, ferry's code for the first failure (see `ferry --help`), and nothing is
# pruned: 2 usage (also: no running container, or a missing or unreadable passphrase file), 4
# engine unreachable or refused, 6 store locked by another run, 7 the bundle failed verification,
# 8 disk full or permissions, 10 a pre-exec hook failed; 129, 130, 141, 143 interrupted. A prune that fails after
# a good backup exits with the prune's code.
#
# Messages: to the journal when run by systemd; else to syslog (tag ferry-backup) when `logger`
# works, else to stderr (which cron mails). On failure, everything ferry said also goes to stderr,
# so cron mails it even when the messages went to syslog. --quiet keeps a good night silent.
#
# Environment (all optional):
#   BACKUP_DIR             the store (default: the config file's [backup] output, else
#                          /backups): a local directory that exists (when it
#                          does not, say a disk that is not mounted, the backup fails, exit 5,
#                          rather than filling the root filesystem), or a directory on
#                          a backup host, ssh://user@host/srv/backups (SFTP; --verify reads the
#                          bundle back over it, prune runs there under the store's lock)
#                          or a bucket and prefix, s3://bucket/host1 (off-site; credentials
#                          from AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, another
#                          S3 server with AWS_ENDPOINT_URL_S3 or s3+https://host/bucket/prefix)
#                          or a restic repository, restic:/srv/restic or restic:sftp:..., restic:s3:...
#                          (one snapshot per container set; only what changed is added; restic's
#                          password and backend settings from its own environment,
#                          RESTIC_PASSWORD_FILE, ...; the repository must exist: restic init;
#                          restic's -o options from FERRY_RESTIC_OPTION, one per line, e.g.
#                          sftp.command=ssh -i /root/.ssh/backup_key -p 2222 backup@nas -s sftp
#                          for BACKUP_DIR=restic:sftp:backup@nas:/srv/restic).
#                          Several hosts may back up into one repository. There the backup
#                          itself is not --verify'd: `ferry verify restic:...` runs after it
#                          (restic check, and the newest snapshot of each host and set read back
#                          and checked), then prune (restic forget --prune with these rules)
#   KEEP_DAILY, KEEP_WEEKLY, KEEP_MONTHLY
#                          rotation (defaults 7, 4, 6; 0 leaves a rule out; at least one > 0).
#                          When none is set and the config file (or FERRY_KEEP_*) has
#                          keep-* rules for prune, those apply instead
#   FERRY_NOTIFY_URL       dead-man's switch, e.g. https://hc-ping.com/<uuid>: ferry POSTs to
#                          <url>/start, <url> on success and <url>/fail on failure or partial;
#                          after a full backup, the prune (and a restic repository's verify)
#                          ping it too, so a failed prune turns the check to failed; after a
#                          partial one they do not (their success must not hide the failure)
#   FERRY_CONFIG           ferry's config file (default /etc/ferry/ferry.toml or
#                          ~/.config/ferry/ferry.toml, when one exists); FERRY_FILTER and the
#                          other FERRY_* variables of ferry's options work as for ferry itself
#   FERRY_PASSPHRASE_FILE  encrypt the bundles (--encrypt) with the passphrase in this file
#                          (mode 0600). FERRY_PASSPHRASE (the passphrase itself) also turns
#                          encryption on. Restoring needs the same passphrase: keep a copy of it
#                          away from this host, or the bundles are useless after a disaster.
#   FERRY_SIGN_KEY         sign every bundle with this host's SSH key (a private key file, or
#                          agent:SHA256:<fingerprint> for a key in ssh-agent), so that a DR host
#                          restores only what this host wrote, with `ferry restore --trust`: the
#                          way to share one store among several hosts (examples/dr-restore-trusted.sh)
#   FERRY_BACKUP_ARGS      more `ferry backup` options, split on spaces, e.g.
#                          "--include-binds --compress gzip"
#   FERRY                  the ferry command (default ferry); DOCKER_HOST as for ferry
set -eu

FERRY=${FERRY:-ferry}
TAG=ferry-backup
# cron's PATH is minimal (/usr/bin:/bin); ferry installed with npm -g usually lives in /usr/local/bin.
PATH=$PATH:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin
export PATH

# Under systemd, stderr is the journal (JOURNAL_STREAM names it): write there with a priority
# prefix, which journald understands and attributes to the unit (journalctl -u ferry-backup).
journal=0
if [ -n "${JOURNAL_STREAM:-}" ] && [ "$(stat -L -c '%d:%i' /dev/fd/3 3>&2 2>/dev/null)" = "$JOURNAL_STREAM" ]; then
  journal=1
fi
have_logger=0
command -v logger >/dev/null 2>&1 && have_logger=1
to_syslog=0    # set once a message went to syslog

# log PRIORITY MESSAGE   (PRIORITY: info, warning, err)
log() {
  if [ "$journal" = 1 ]; then
    case $1 in err) p=3 ;; warning) p=4 ;; *) p=6 ;; esac
    printf '<%s>%s\n' "$p" "$2" >&2
  elif [ "$have_logger" = 1 ] && logger -t "$TAG" -p "user.$1" -- "$2" 2>/dev/null; then
    to_syslog=1
  else
    printf '%s %s: %s\n' "$(date '+%Y-%m-%dT%H:%M:%S%z')" "$TAG" "$2" >&2
  fi
}
# log_lines PRIORITY FILE: each non-empty line of FILE
log_lines() {
  while IFS= read -r line; do
    if [ -n "$line" ]; then log "$1" "$line"; fi
  done <"$2"
}
# Make sure cron mails a failure even when the messages went to syslog.
mail_failure() {
  if [ "$to_syslog" = 1 ]; then
    echo "$TAG: $1:" >&2
    cat "$2" >&2
  fi
}

out=$(mktemp "${TMPDIR:-/tmp}/ferry-backup.XXXXXX")
err=$(mktemp "${TMPDIR:-/tmp}/ferry-backup.XXXXXX")
trap 'rm -f "$out" "$err"' EXIT
trap 'exit 130' INT TERM

# --- 0. settings: the environment above, else ferry's config file (and FERRY_* variables), as
# `ferry config` reports them, else the defaults.
cfg=0
$FERRY --json config >"$out" 2>"$err" || cfg=$?
if [ "$cfg" != 0 ]; then
  cat "$out" >>"$err"
  log_lines err "$err"
  log err "FAILED: ferry config exited with code $cfg (a config file that does not parse?); nothing was backed up"
  mail_failure "ferry config failed with exit code $cfg" "$err"
  exit "$cfg"
fi
settings=$(cat "$out")
# setting COMMAND OPTION: the value the file or a FERRY_* variable gives that option (a string;
# a list as its JSON text), or nothing.
setting() {
  printf '%s\n' "$settings" | sed -n \
    -e 's/.*"command":"'"$1"'","option":"'"$2"'","value":"\([^"]*\)".*/\1/p' \
    -e 's/.*"command":"'"$1"'","option":"'"$2"'","value":\[\([^]]*\)\].*/\1/p'
}
if [ -z "${BACKUP_DIR:-}" ]; then BACKUP_DIR=$(setting backup output); fi
BACKUP_DIR=${BACKUP_DIR:-/backups}
# The rotation: KEEP_* when one is set, else the file's [prune] keep-* rules, else 7/4/6.
if [ -z "${KEEP_DAILY:-}${KEEP_WEEKLY:-}${KEEP_MONTHLY:-}" ] &&
  printf '%s\n' "$settings" | grep -q '"command":"prune","option":"keep-'; then
  file=$(printf '%s\n' "$settings" | sed -n 's/.*"file":"\([^"]*\)".*/\1/p')
  retention="from ${file:-the FERRY_KEEP_* variables}"
  KEEP_DAILY=0 KEEP_WEEKLY=0 KEEP_MONTHLY=0
else
  KEEP_DAILY=${KEEP_DAILY:-7}
  KEEP_WEEKLY=${KEEP_WEEKLY:-4}
  KEEP_MONTHLY=${KEEP_MONTHLY:-6}
  retention="daily $KEEP_DAILY, weekly $KEEP_WEEKLY, monthly $KEEP_MONTHLY"
fi
filter=$(setting backup filter | tr -d '[]"')
selected=${filter:+" (filter $filter)"}

# --- 1. backup
# Global options (--quiet, --passphrase-file) go before the command.
set -- --quiet
crypt=
if [ -n "${FERRY_PASSPHRASE_FILE:-}" ]; then
  set -- "$@" --passphrase-file "$FERRY_PASSPHRASE_FILE"
  crypt=" (encrypted)"
elif [ -n "${FERRY_PASSPHRASE:-}" ]; then
  crypt=" (encrypted)"
fi
restic_repo=0
verify=--verify
case $BACKUP_DIR in
  restic:*) restic_repo=1 verify= ;; # checked after the backup instead (ferry verify restic:...)
esac
# shellcheck disable=SC2086  # $verify is empty or one word
set -- "$@" backup --all -o "$BACKUP_DIR" $verify
[ -n "$crypt" ] && set -- "$@" --encrypt
[ -n "${FERRY_NOTIFY_URL:-}" ] && set -- "$@" --notify-url "$FERRY_NOTIFY_URL"
# shellcheck disable=SC2086  # FERRY_BACKUP_ARGS is split on purpose
set -- "$@" ${FERRY_BACKUP_ARGS:-}

signed=
[ -n "${FERRY_SIGN_KEY:-}" ] && signed=" (signed)"   # ferry reads FERRY_SIGN_KEY itself
log info "starting: ferry backup --all -o $BACKUP_DIR${verify:+ $verify}$crypt$signed$selected"
rc=0
# --quiet: nothing on success but warnings (bind mounts recorded but not copied, a notify URL
# that could not be reached, ...); on failure "ferry: error: <container>: ..." lines and a hint.
$FERRY "$@" >"$out" 2>&1 || rc=$?

case $rc in
  0)
    log_lines warning "$out"
    ;;
  3)
    log_lines err "$out"
    log err "PARTIAL: some containers were not backed up (above); the others were, and are verified"
    mail_failure "ferry backup --all was partial (exit 3)" "$out"
    ;;
  129 | 130 | 141 | 143)
    log err "interrupted (exit $rc); containers were resumed and partial files removed"
    exit "$rc"
    ;;
  *)
    log_lines err "$out"
    log err "FAILED: ferry backup exited with code $rc; nothing was pruned"
    mail_failure "ferry backup failed with exit code $rc" "$out"
    exit "$rc"
    ;;
esac

# After a partial backup (its /fail sent), the commands below do not ping FERRY_NOTIFY_URL (or
# the file's notify-url): their success must not hide the backup's failure. An empty value
# turns the ping off.
if [ "$rc" = 0 ]; then
  after() { "$@"; }
else
  after() { FERRY_NOTIFY_URL= "$@"; }
fi

# --- 1b. a restic repository: restic check, and the newest snapshots read back and checked.
# A repository that fails it is not pruned (its older snapshots may be what is left to restore).
if [ "$restic_repo" = 1 ]; then
  vrc=0
  after $FERRY --quiet verify "$BACKUP_DIR" >"$out" 2>&1 || vrc=$?
  if [ "$vrc" != 0 ]; then
    log_lines err "$out"
    log err "FAILED: ferry verify $BACKUP_DIR exited with code $vrc after the backup; nothing was pruned"
    mail_failure "ferry verify of the restic repository failed with exit code $vrc" "$out"
    exit "$vrc"
  fi
  log info "verified: restic check and the newest snapshots of $BACKUP_DIR read back"
fi

# --- 2. rotation, also after a partial backup (the containers that failed keep their bundles:
# prune never removes a container's newest bundle, and only counts days that have one).
set --
[ "$KEEP_DAILY" -gt 0 ] && set -- "$@" --keep-daily "$KEEP_DAILY"
[ "$KEEP_WEEKLY" -gt 0 ] && set -- "$@" --keep-weekly "$KEEP_WEEKLY"
[ "$KEEP_MONTHLY" -gt 0 ] && set -- "$@" --keep-monthly "$KEEP_MONTHLY"
prc=0
# stdout: a table of every bundle with keep/removed and why, then "N bundles removed (...), M kept";
# stderr: "ferry: removed <bundle>" for each removal, warnings, errors.
after $FERRY prune "$BACKUP_DIR" "$@" >"$out" 2>"$err" || prc=$?
if [ "$prc" = 0 ]; then
  log_lines info "$err"
  summary=$(tail -n 1 "$out")
  if [ -n "$summary" ]; then log info "prune: $summary"; fi
else
  cat "$out" >>"$err"
  log_lines err "$err"
  log err "FAILED: ferry prune exited with code $prc (the backup itself went through)"
  mail_failure "ferry prune failed with exit code $prc" "$err"
  [ "$rc" = 0 ] && rc=$prc
fi

# Bundles that failed --verify are kept for inspection (ls and prune ignore them): say so.
# (On an ssh:// or s3:// store the failure itself was logged above; this count is for local stores.)
case $BACKUP_DIR in
  ssh://* | s3://* | s3+http://* | s3+https://* | restic:*) corrupt=0 ;;
  *) corrupt=$(find "$BACKUP_DIR" -maxdepth 1 -name 'ferry-*.tar.corrupt' 2>/dev/null | wc -l) ;;
esac
[ "$corrupt" -gt 0 ] && log warning "$corrupt bundle(s) failed verification and were kept as $BACKUP_DIR/*.tar.corrupt; look at them, then delete them"

if [ "$rc" = 0 ]; then
  log info "done: every running container backed up and verified$selected; retention $retention"
fi
exit "$rc"
