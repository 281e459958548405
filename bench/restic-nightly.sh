#!/bin/sh
# 30 nightly backups into a restic repository at 1 % daily change, rotated (issue 24's target:
# the repository stays <= 1.5x one full backup). Run as root on a lab host, after `npm run build`;
# not part of `npm run bench`.
#
# Workload: a busybox container whose volume holds NFILES random files of FILE_KIB KiB (default
# 100 x 2560 KiB = 250 MiB); before each night after the first, one file is rewritten with new
# random bytes (1 % of the volume). Each night: `ferry backup -o restic:<repo>` (a local
# repository), then the rotation cron-backup.sh runs by default (--keep-daily 7 --keep-weekly 4
# --keep-monthly 6), decided by ferry's own rules (resticRetention, the code `ferry prune` runs)
# and applied with `restic forget --prune`, as `ferry prune restic:...` does. The nights run
# minutes apart, not days: the rules are applied with each snapshot dated NIGHT days after the
# first (night 1 = 2026-01-01 02:15 UTC), which `ferry prune` itself cannot be told.
#
# Output: one line per night, tab-separated: night, backup wall seconds, bytes restic added,
# repository bytes (du -sb), that against the repository after the first night, snapshots kept.
set -eu
cd "$(dirname "$0")/.."
F=${FERRY:-$PWD/bin/ferry.js}
B=${FERRY_RESTIC_BENCH:-/var/tmp/ferry-restic-nightly}
NIGHTS=${NIGHTS:-30}
NFILES=${NFILES:-100}
FILE_KIB=${FILE_KIB:-2560}
C=${C:-rb-nightly}
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR="$B/cache"
repo=$B/repo
mkdir -p "$B"
docker rm -f "$C" >/dev/null 2>&1 || true
docker volume rm "$C-data" >/dev/null 2>&1 || true
rm -rf "$repo" "$B/cache" "$B/nights"
: >"$B/nights"
restic init -q -r "$repo"
docker run -d --name "$C" -v "$C-data:/data" ferry-test/busybox:1 sleep 360000 >/dev/null
docker exec "$C" sh -c "i=1; while [ \$i -le $NFILES ]; do head -c $((FILE_KIB * 1024)) /dev/urandom > /data/f\$i; i=\$((i+1)); done"
sync
echo "# $NFILES files of $FILE_KIB KiB, $NIGHTS nights, restic $(restic version | cut -d' ' -f2), ferry $(git rev-parse --short HEAD)"
printf 'night\twall_s\tadded\trepo_bytes\tx_first\tsnapshots\n'
first=
n=1
while [ "$n" -le "$NIGHTS" ]; do
  if [ "$n" -gt 1 ]; then
    f=$(((n * 37) % NFILES + 1))
    docker exec "$C" sh -c "head -c $((FILE_KIB * 1024)) /dev/urandom > /data/f$f"
    sync
  fi
  s=$(date +%s.%N)
  $F --json backup "$C" -o "restic:$repo" >"$B/out.json"
  e=$(date +%s.%N)
  id=$(sed -n 's/.*"snapshot":"\([0-9a-f]*\)".*/\1/p' "$B/out.json")
  added=$(sed -n 's/.*"addedBytes":\([0-9]*\).*/\1/p' "$B/out.json")
  printf '%s\t%s\n' "$id" "$n" >>"$B/nights"
  # ferry's rules on the snapshots, each dated by its night; restic forget --prune the rest.
  restic -r "$repo" snapshots --json --tag ferry >"$B/snaps.json"
  drop=$(node --input-type=module -e "
    import { readFileSync } from 'node:fs';
    import { resticRetention } from '$PWD/dist/ops/restic-prune.js';
    const night = new Map(readFileSync('$B/nights', 'utf8').trim().split('\n').map((l) => l.split('\t')));
    const day = (id) => new Date(Date.UTC(2026, 0, 1, 2, 15) + (Number([...night].find(([k]) => id.startsWith(k))[1]) - 1) * 86400e3);
    const list = JSON.parse(readFileSync('$B/snaps.json', 'utf8')).map((s) => ({ ...s, time: day(s.id).toISOString() }));
    const { removed } = resticRetention(list, { daily: 7, weekly: 4, monthly: 6 });
    console.log(removed.map((r) => r.snapshot).join(' '));
  ")
  # shellcheck disable=SC2086  # snapshot ids, split on purpose
  [ -n "$drop" ] && restic -q -r "$repo" forget --prune $drop >/dev/null
  size=$(du -sb "$repo" | cut -f1)
  [ -n "$first" ] || first=$size
  kept=$(restic -r "$repo" snapshots --json --tag ferry | grep -o '"id"' | wc -l)
  printf '%s\t%.2f\t%s\t%s\t%.3f\t%s\n' "$n" "$(echo "$e - $s" | bc)" "${added:-?}" "$size" \
    "$(echo "$size / $first" | bc -l)" "$kept"
  n=$((n + 1))
done
docker rm -f "$C" >/dev/null
docker volume rm "$C-data" >/dev/null
docker images --format '{{.Repository}}:{{.Tag}}' | grep "^ferry/$C:" | xargs -r docker rmi >/dev/null || true
echo "# done (repository left in $repo)"
