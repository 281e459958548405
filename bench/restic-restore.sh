#!/bin/sh
# Restore from a restic snapshot against restore from a local bundle (issue 24's target: <= 1.2x).
# A busybox container with a 1 GiB volume of 200 random 5 MiB files, backed up once into a local
# bundle (zstd, ferry's default) and once into a restic repository (the volume as a file tree);
# then each restored RUNS times (default 3), alternately, container, volume and image removed
# before each, --no-start. Prints each wall time, the median of each and the ratio, and the data
# path the restic restore reported. Run as root on a lab host (engine A by DOCKER_HOST); not part
# of npm run bench.
set -e
F=${FERRY:-$(dirname "$0")/../bin/ferry.js}
B=${FERRY_RESTIC_BENCH:-/var/tmp/ferry-restic-restore-bench}
RUNS=${RUNS:-3}
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$B/cache
C=rr-bench
gone() {
  docker rm -f $C >/dev/null 2>&1 || true
  docker volume rm $C-data >/dev/null 2>&1 || true
  docker images --format '{{.Repository}}:{{.Tag}}' | grep "^ferry/$C:" | xargs -r docker rmi >/dev/null 2>&1 || true
}
gone
rm -rf "$B"; mkdir -p "$B/out"
docker run -d --network none --name $C -v $C-data:/data ferry-test/busybox:1 sleep 36000 >/dev/null
docker exec $C sh -c 'i=1; while [ $i -le 200 ]; do head -c 5242880 /dev/urandom > /data/f$i; i=$((i+1)); done'
sync
$F -q backup $C -o "$B/out/ref.tar"
restic init -q -r "$B/repo"
$F -q backup $C -o "restic:$B/repo"
sum() { docker run --rm --network none -v $C-data:/v:ro ferry-test/busybox:1 sh -c 'cd /v && md5sum f* | md5sum'; }
want=$(sum)
t() { s=$(date +%s.%N); "$@"; e=$(date +%s.%N); echo "$e - $s" | bc; }
i=1
while [ "$i" -le "$RUNS" ]; do
  gone; sync
  echo "bundle $(t $F -q restore "$B/out/ref.tar" --no-start)" | tee -a "$B/out/times"
  [ "$(sum)" = "$want" ] || { echo "bundle restore: data differs" >&2; exit 1; }
  gone; sync
  s=$(date +%s.%N)
  $F --json restore "restic:$B/repo#$C" --no-start > "$B/out/restic-$i.json"
  e=$(date +%s.%N)
  echo "restic $(echo "$e - $s" | bc)" | tee -a "$B/out/times"
  [ "$(sum)" = "$want" ] || { echo "restic restore: data differs" >&2; exit 1; }
  grep -o '"dataPaths":{"volumes":\[[^]]*\]' "$B/out/restic-$i.json"
  i=$((i + 1))
done
gone
med() { grep "^$1 " "$B/out/times" | cut -d' ' -f2 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mb=$(med bundle); mr=$(med restic)
echo "median: bundle $mb s, restic $mr s, ratio $(echo "scale=2; $mr / $mb" | bc)"
