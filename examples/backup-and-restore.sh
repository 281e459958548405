#!/bin/sh
# A full round trip with ferry: back a container up, remove it and its volumes, restore it from
# the bundle, and check that its volume data came back.
#
#   examples/backup-and-restore.sh               # on a demo container it creates: docs-demo-web
#   examples/backup-and-restore.sh CONTAINER     # on one of yours -- see "CAREFUL" below
#   FERRY=bin/ferry.js examples/backup-and-restore.sh
#
# Without an argument the script creates docs-demo-web (from $DEMO_IMAGE, a busybox image that is
# already on the engine; nothing is pulled) with a named volume docs-demo-data holding a few files,
# runs the round trip on it and removes everything it made, whatever happens.
#
# CAREFUL: with a CONTAINER argument the container and its volumes are really removed and then
# restored from the bundle. The script refuses when a named volume of the container is also used
# by another container, checks the bundle with `ferry verify` before it removes anything, and
# keeps the bundle (and says where) if anything fails after the removal. On success the restored
# container is left in place and the bundle is deleted. Bind-mount data is neither removed nor
# checked.
#
# Needs: ferry (or FERRY), docker, tar, sha256sum, awk, mktemp.
set -eu

FERRY=${FERRY:-ferry}
DEMO_IMAGE=${DEMO_IMAGE:-ferry-test/busybox:1}
DEMO=docs-demo-web
DEMO_VOLUME=docs-demo-data

say() { printf 'backup-and-restore: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

demo=0
demo_made=0
removed=0
work=

cleanup() {
  rc=$?
  trap - EXIT INT TERM
  if [ "$demo" = 1 ] && [ "$demo_made" = 1 ]; then
    say "removing the demo container, its volume and its restored image"
    img=$(docker inspect -f '{{.Config.Image}}' "$DEMO" 2>/dev/null || true)
    docker rm -f "$DEMO" >/dev/null 2>&1 || true
    docker volume rm "$DEMO_VOLUME" >/dev/null 2>&1 || true
    case $img in ferry/*) docker rmi "$img" >/dev/null 2>&1 || true ;; esac
  fi
  if [ -n "$work" ]; then
    if [ "$rc" != 0 ] && [ "$demo" = 0 ] && [ "$removed" = 1 ]; then
      say "FAILED after $name was removed; the bundle is kept in $work"
      say "restore it with: $FERRY restore $work/ferry-*.tar   (see examples/dr-runbook.md)"
    else
      rm -rf "$work"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The volume mounts of a container as "<name> <destination>" lines.
volume_mounts() {
  docker inspect -f '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{.Destination}}{{"\n"}}{{end}}{{end}}' "$1" | sed '/^$/d'
}

# The named (not anonymous, i.e. not 64-hex) volumes a container mounts, one per line.
named_volumes() {
  volume_mounts "$1" | awk '$1 !~ /^[0-9a-f]+$/ || length($1) != 64 { print $1 }'
}

# What must survive the round trip, per volume mount: every entry's type, mode, numeric owner,
# size and name (times are left out: the volume root's own mtime is not restored), and a
# checksum of all file contents.
fingerprint() {
  volume_mounts "$1" | while read -r _vol dest; do
    echo "== $dest"
    docker cp "$1:$dest/." - | tar --numeric-owner -tvf - | awk '{ $4 = ""; $5 = ""; print }' | sort
    docker cp "$1:$dest/." - | tar -xOf - | sha256sum
  done
}

if [ $# -gt 1 ]; then
  die "usage: $0 [CONTAINER]"
elif [ $# -eq 1 ]; then
  name=$1
  docker inspect "$name" >/dev/null 2>&1 || die "no such container: $name"
else
  demo=1
  name=$DEMO
  if docker inspect "$DEMO" >/dev/null 2>&1 || docker volume inspect "$DEMO_VOLUME" >/dev/null 2>&1; then
    die "$DEMO or $DEMO_VOLUME already exists; remove them first (docker rm -f $DEMO; docker volume rm $DEMO_VOLUME)"
  fi
  say "creating the demo container $DEMO with volume $DEMO_VOLUME (image $DEMO_IMAGE)"
  demo_made=1
  docker volume create "$DEMO_VOLUME" >/dev/null
  docker run -d --name "$DEMO" -v "$DEMO_VOLUME:/data" -e DEMO_GREETING=hello \
    "$DEMO_IMAGE" httpd -f -p 80 -h /data >/dev/null
  docker exec "$DEMO" sh -c '
    set -e
    cd /data
    echo "<h1>restored by ferry</h1>" > index.html
    mkdir -p www/sub && echo nested > www/sub/file.txt
    echo owned > owned.txt && chown 1000:1000 owned.txt
    ln -s index.html link.html
    mkdir -p tmp && chmod 1777 tmp
    echo "written to the container layer" > /etc/demo-layer'
fi

# Refuse before touching anything if a named volume is shared with another container.
for vol in $(named_volumes "$name"); do
  users=$(docker ps -aq --filter "volume=$vol" | wc -l)
  [ "$users" -le 1 ] || die "volume $vol is also used by another container; not removing it"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/ferry-example.XXXXXX")
fingerprint "$name" > "$work/before.txt"
was_running=$(docker inspect -f '{{.State.Running}}' "$name")

say "backing up $name into $work"
$FERRY backup "$name" -o "$work"
set -- "$work"/ferry-*.tar
[ $# -eq 1 ] && [ -f "$1" ] || die "expected one bundle in $work"
bundle=$1

# Read the whole bundle back before anything is removed: every member against its sha256, the
# image and volume archives well-formed (`ferry backup --verify` would do the same in one go).
say "verifying $bundle"
$FERRY verify "$bundle" >&2 || die "$bundle does not verify; nothing was removed"

vols=$(named_volumes "$name")
say "removing $name and its volumes: $(echo ${vols:-"(no named volumes)"})"
removed=1
docker rm -f -v "$name" >/dev/null            # -v: its anonymous volumes go with it
for vol in $vols; do docker volume rm "$vol" >/dev/null; done

say "restoring from $bundle"
$FERRY restore "$bundle"

say "checking the volume data"
fingerprint "$name" > "$work/after.txt"
if ! diff -u "$work/before.txt" "$work/after.txt" >&2; then
  die "the restored volume data differs (diff above)"
fi
[ "$(docker inspect -f '{{.State.Running}}' "$name")" = "$was_running" ] || die "$name: running state differs"

if [ "$demo" = 1 ]; then
  [ "$(docker exec "$DEMO" cat /etc/demo-layer)" = "written to the container layer" ] || die "the container layer was not restored"
  [ "$(docker exec "$DEMO" sh -c 'echo "$DEMO_GREETING"')" = hello ] || die "the environment was not restored"
  i=0
  until page=$(docker exec "$DEMO" wget -qO- http://127.0.0.1/ 2>/dev/null); do
    i=$((i + 1)); [ $i -lt 10 ] || die "the restored web server does not answer"; sleep 1
  done
  [ "$page" = "<h1>restored by ferry</h1>" ] || die "the restored web server serves something else: $page"
fi

say "OK: $name was backed up, removed and restored; its volume data is identical"
