#!/bin/sh
# restic store measurement (issue 24): 1 GiB volume of 200 random 5 MiB files, 1 % change.
set -e
F=${FERRY:-$(dirname "$0")/../bin/ferry.js}
B=${FERRY_RESTIC_BENCH:-/var/tmp/ferry-restic-bench}
mkdir -p "$B"
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$B/cache
C=rb-bench
docker rm -f $C >/dev/null 2>&1 || true
docker volume rm $C-data >/dev/null 2>&1 || true
rm -rf $B/repo $B/repo-tar $B/cache $B/out; mkdir -p $B/out
docker run -d --name $C -v $C-data:/data ferry-test/busybox:1 sleep 36000 >/dev/null
docker exec $C sh -c 'i=1; while [ $i -le 200 ]; do head -c 5242880 /dev/urandom > /data/f$i; i=$((i+1)); done'
sync
t() { s=$(date +%s.%N); "$@"; e=$(date +%s.%N); echo "$(echo "$e - $s" | bc)"; }
size() { du -sb "$1" | cut -f1; }
echo "== local file bundle (default codec)"
t $F -q backup $C -o $B/out/ref.tar
ls -l $B/out/ref.tar | awk '{print $5}'
rm -f $B/out/ref.tar
echo "== local file bundle (--compress none)"
t $F -q backup $C -o $B/out/ref.tar --compress none
rm -f $B/out/ref.tar
for mode in tree tar; do
  repo=$B/repo; env=""
  [ $mode = tar ] && repo=$B/repo-tar && env="FERRY_HOST_VOLUMES=0"
  restic init -q -r $repo
  echo "== $mode: first"
  t env $env $F --json backup $C -o restic:$repo > $B/out/$mode-1.json
  cat $B/out/$mode-1.json; echo "repo bytes: $(size $repo)"
  docker exec $C sh -c 'head -c 5242880 /dev/urandom > /data/f7; head -c 5242880 /dev/urandom > /data/f120'
  sync
  echo "== $mode: second (2 of 200 files rewritten)"
  t env $env $F --json backup $C -o restic:$repo > $B/out/$mode-2.json
  cat $B/out/$mode-2.json; echo "repo bytes: $(size $repo)"
  echo "== $mode: third (nothing changed)"
  t env $env $F --json backup $C -o restic:$repo > $B/out/$mode-3.json
  cat $B/out/$mode-3.json; echo "repo bytes: $(size $repo)"
done
echo "== restore from restic (tree), volume removed first"
docker rm -f $C >/dev/null; docker volume rm $C-data >/dev/null
t $F -q restore restic:$B/repo#$C --no-start
docker rm -f $C >/dev/null; docker volume rm $C-data >/dev/null
docker images --format '{{.Repository}}:{{.Tag}}' | grep "^ferry/$C:" | xargs -r docker rmi >/dev/null || true
echo "== done (repositories left in $B)"
