#!/bin/sh
# Disaster recovery from a store that several hosts write to, trusting only their signatures.
#
# The backing-up hosts run examples/cron-backup.sh nightly into ONE shared store (a directory on
# a backup host, ssh://..., or s3://...), each with its own signing key:
#   15 2 * * * root BACKUP_DIR=s3://backups/fleet FERRY_SIGN_KEY=/etc/ferry/sign-key /usr/local/sbin/ferry-cron-backup.sh
# (make the key once per host: ssh-keygen -t ed25519 -N '' -C host-a -f /etc/ferry/sign-key;
# a key in ssh-agent works too: FERRY_SIGN_KEY=agent:SHA256:<fingerprint>).
# The DR host keeps an OpenSSH allowed_signers file with one line per backing-up host, made from
# each host's /etc/ferry/sign-key.pub (revoke a lost key with a line `@revoked ssh-ed25519 AAAA...`):
#   host-a ssh-ed25519 AAAA...
#   host-b ssh-ed25519 AAAA...
#
# Usage: dr-restore-trusted.sh <store> <container>...
#
# For each container, the newest bundle of the store that holds it AND that a key of the
# allowed_signers file signed (as its manifest declares: `ferry ls --trust`) is restored with
# `ferry restore --trust`, which checks the signature over the whole bundle before it changes
# anything. Bundles nobody trusted signed (one planted by whoever else can write to the store,
# an unsigned one, one signed by a revoked or unknown key) are skipped and named. A bundle that
# declares a trusted key but whose signature does not hold (changed after signing) is refused by
# ferry (exit 11, nothing changed), named, and the next older trusted one is tried.
#
# Exit status: 0 when every container was restored from a trusted bundle (warnings name what was
# skipped or refused); 11 when a container has no bundle whose signature holds (nothing was
# restored for it); 2 usage; otherwise the code of the ferry command that failed (see ferry --help;
# e.g. 6 when a container or volume of that name exists: restore on a fresh host, or pass
# RESTORE_ARGS="--on-conflict rename"). It stops at the first container that fails.
#
# Environment:
#   TRUST          the allowed_signers file (default /etc/ferry/allowed_signers); FERRY_TRUST too
#   RESTORE_ARGS   more `ferry restore` options, split on spaces (e.g. "--no-start")
#   FERRY          the ferry command (default ferry); DOCKER_HOST (or -H in FERRY) is the engine
#                  restored onto; FERRY_PASSPHRASE(_FILE) and the store's credentials as for ferry
# Needs node (ferry's own runtime) to read `ferry ls --json`.
set -eu

FERRY=${FERRY:-ferry}
TRUST=${TRUST:-${FERRY_TRUST:-/etc/ferry/allowed_signers}}

if [ $# -lt 2 ]; then
  echo "usage: $0 <store> <container>..." >&2
  exit 2
fi
if [ ! -r "$TRUST" ]; then
  echo "dr: cannot read the allowed_signers file $TRUST (set TRUST)" >&2
  exit 2
fi
STORE=$1
shift

log() { printf 'dr: %s\n' "$*" >&2; }

listing=$(mktemp "${TMPDIR:-/tmp}/ferry-dr.XXXXXX")
trap 'rm -f "$listing"' EXIT
trap 'exit 130' INT TERM

# ls reads only the manifests: who each bundle says signed it (principals from $TRUST).
$FERRY --json ls "$STORE" --trust "$TRUST" >"$listing"

# candidates CONTAINER: "trusted <bundle> <principals>" newest first, then "skip <bundle> <why>".
candidates() {
  node -e '
    const [file, container] = process.argv.slice(1);
    const all = JSON.parse(require("fs").readFileSync(file, "utf8")).bundles || [];
    const mine = all.filter((b) => (b.containers || []).includes(container)).reverse(); // newest first
    for (const b of mine)
      if (b.signer && b.signer.principals && b.signer.principals.length) console.log(`trusted ${b.bundle} ${b.signer.principals.join(",")}`);
    for (const b of mine)
      if (!(b.signer && b.signer.principals && b.signer.principals.length))
        console.log(`skip ${b.bundle} ${b.signer ? `signed by ${b.signer.fingerprint}, not in the allowed_signers file` : "not signed"}`);
  ' "$listing" "$1"
}

refused_any=0
for c in "$@"; do
  list=$(candidates "$c")
  printf '%s\n' "$list" | while read -r what bundle why; do
    if [ "$what" = skip ]; then log "WARNING: $c: skipped $bundle ($why)"; fi
  done
  restored=0
  for bundle in $(printf '%s\n' "$list" | awk '$1 == "trusted" { print $2 }'); do
    log "$c: restoring $bundle (signed by $(printf '%s\n' "$list" | awk -v b="$bundle" '$2 == b { print $3 }'))"
    rc=0
    # shellcheck disable=SC2086  # RESTORE_ARGS is split on purpose
    $FERRY restore "$bundle" --trust "$TRUST" ${RESTORE_ARGS:-} || rc=$?
    if [ "$rc" = 0 ]; then
      restored=1
      break
    fi
    if [ "$rc" = 11 ]; then
      log "WARNING: $c: REFUSED $bundle: its signature does not hold (nothing was changed); trying an older one"
      refused_any=1
      continue
    fi
    log "FAILED: $c: ferry restore exited with code $rc"
    exit "$rc"
  done
  if [ "$restored" = 0 ]; then
    log "FAILED: $c: no bundle in $STORE is signed by a key of $TRUST whose signature holds; nothing restored"
    exit 11
  fi
done
if [ "$refused_any" = 1 ]; then log "WARNING: some bundles were refused: someone wrote to $STORE who should not have"; fi
log "done: $* restored from trusted bundles"
