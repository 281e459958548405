#!/bin/sh
# Start the lab ferry's end-to-end tests need, all on this machine, all on loopback:
#   engine A  unix:///var/run/docker.sock          (default bridge docker0)
#   engine B  unix:///var/run/docker-b.sock        (own data-root, exec-root, pidfile, bridge docker1)
#   registry  127.0.0.1:5000                       (Debian's docker-registry)
#   sshd      127.0.0.1:2222, whose sessions see engine B's socket at /var/run/docker.sock
#             (and 127.0.0.1:2223, the same with socket forwarding refused)
#   sshd      127.0.0.1:2224, whose sessions see engine C's socket at /var/run/docker.sock
#   podman    unix:///run/podman/podman.sock       (Podman's Docker-compatible API, rootful)
#   engine C  unix:///var/run/docker-c.sock        (Docker 26.1.5 from Debian trixie, containerd image
#             store, own containerd, bridge docker2, address pool 172.29.0.0/16)
#   engine D  unix:///var/run/docker-d.sock        (Docker 28.5 and containerd 2.1 from Debian forky,
#             containerd image store, own containerd, bridge docker3, address pool 172.28.0.0/16)
#   S3        http://127.0.0.1:7480                  (Ceph RadosGW: bucket ferry-test, keys in $LAB/s3/s3.env)
# Idempotent: anything already answering is left alone. Writes connection facts to $LAB (default /var/lib/ferry-lab).
set -eu
LAB=${LAB:-/var/lib/ferry-lab}
mkdir -p "$LAB"
log() { echo "lab: $*" >&2; }

need_pkgs=""
command -v dockerd >/dev/null 2>&1 || need_pkgs="$need_pkgs docker.io"
command -v docker-registry >/dev/null 2>&1 || need_pkgs="$need_pkgs docker-registry"
[ -x /usr/sbin/sshd ] || need_pkgs="$need_pkgs openssh-server"
command -v ssh-keygen >/dev/null 2>&1 || need_pkgs="$need_pkgs openssh-client"
dpkg -s busybox-static >/dev/null 2>&1 || need_pkgs="$need_pkgs busybox-static"
command -v zstd >/dev/null 2>&1 || need_pkgs="$need_pkgs zstd"
command -v ip >/dev/null 2>&1 || need_pkgs="$need_pkgs iproute2"
command -v pkill >/dev/null 2>&1 || need_pkgs="$need_pkgs procps"
command -v podman >/dev/null 2>&1 || need_pkgs="$need_pkgs podman"
command -v docker-compose >/dev/null 2>&1 || need_pkgs="$need_pkgs docker-compose"
command -v restic >/dev/null 2>&1 || need_pkgs="$need_pkgs restic" # restic repositories as stores (issue 24)
command -v age >/dev/null 2>&1 || need_pkgs="$need_pkgs age" # age CLI: encrypted bundles open without ferry (issue 26)
if [ -n "$need_pkgs" ]; then
  log "installing$need_pkgs"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $need_pkgs >/dev/null
fi

wait_for() { # seconds, command...
  n=$1; shift
  i=0
  while ! "$@" >/dev/null 2>&1; do
    i=$((i+1)); [ $i -gt $((n*5)) ] && return 1
    sleep 0.2
  done
}

# Whether something answers on 127.0.0.1:PORT.
port_up() { bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# bridge NAME ADDRESS/PREFIX: a bridge of an engine's own (made once), up.
bridge() {
  if ! ip link show "$1" >/dev/null 2>&1; then
    ip link add "$1" type bridge
    ip addr add "$2" dev "$1"
  fi
  ip link set "$1" up
}

# containerd_up BIN STATE CONFIG LOG: a containerd (binaries in BIN, socket STATE/containerd.sock,
# config CONFIG) answering, started when it does not. A socket file alone proves nothing: a
# containerd killed with the previous lab leaves its socket (and pid) behind, and dockerd then
# times out dialling it. The daemon itself is asked.
containerd_up() {
  ctd_bin=$1 ctd_state=$2 ctd_conf=$3 ctd_log=$4
  "$ctd_bin/ctr" --address "$ctd_state/containerd.sock" version >/dev/null 2>&1 && return 0
  rm -f "$ctd_state/containerd.sock" "$ctd_state/containerd.sock.ttrpc"
  PATH=$ctd_bin:/usr/sbin:/usr/bin:/sbin:/bin setsid nohup "$ctd_bin/containerd" \
    --config "$ctd_conf" >"$ctd_log" 2>&1 < /dev/null &
  wait_for 20 "$ctd_bin/ctr" --address "$ctd_state/containerd.sock" version || { cat "$ctd_log" >&2; exit 1; }
}

# lab_sshd CONFIG PIDFILE LOG SOCKET PORT...: an sshd (config CONFIG, which names PIDFILE and
# listens on every PORT) whose sessions see the engine socket SOCKET at /var/run/docker.sock,
# through a bind mount in sshd's own mount namespace. A running one is left alone unless one of
# its ports does not answer (an older lab's, with fewer ports) or its sessions no longer reach
# SOCKET: an engine restart unlinks or replaces its socket, and the kernel detaches the bind
# mount made over that path in every other namespace (the sessions would reach engine A). Then it
# is stopped (only the sshd its pidfile names) and started again.
lab_sshd() {
  sd_conf=$1 sd_pidf=$2 sd_log=$3 sd_sock=$4
  shift 4
  sd_pid=$(cat "$sd_pidf" 2>/dev/null || true)
  if [ -n "$sd_pid" ] && [ "$(cat "/proc/$sd_pid/comm" 2>/dev/null)" = sshd ]; then
    sd_why=""
    for sd_port in "$@"; do port_up "$sd_port" || sd_why="127.0.0.1:$sd_port does not answer"; done
    if [ -z "$sd_why" ] &&
      [ "$(nsenter -t "$sd_pid" -m stat -L -c %i /var/run/docker.sock 2>/dev/null)" != "$(stat -L -c %i "$sd_sock")" ]; then
      sd_why="its sessions no longer reach $sd_sock"
    fi
    if [ -n "$sd_why" ]; then
      log "restarting sshd of $sd_conf ($sd_why)"
      kill "$sd_pid" 2>/dev/null || true
      wait_for 20 sh -c "! kill -0 $sd_pid"
    fi
  fi
  port_up "$1" && return 0
  log "starting sshd on 127.0.0.1 port $* ($sd_sock at /var/run/docker.sock inside)"
  setsid nohup unshare --mount sh -c "mount --make-rprivate / && touch /var/run/docker.sock 2>/dev/null; mount --bind $sd_sock /var/run/docker.sock && exec /usr/sbin/sshd -D -e -f $sd_conf" >"$sd_log" 2>&1 < /dev/null &
  wait_for 20 port_up "$1" || { cat "$sd_log" >&2; exit 1; }
}

# Each engine hands out user networks from its own address pool: two engines on one host
# otherwise pick the same 172.x subnets, and traffic meant for one engine's network goes to the
# other's bridge. (Tests that pin subnets use 172.30.x and 172.31.25x.x, outside every pool.)

# --- engine C: Docker 26 with the containerd image store (the default of new Docker 29 installs)
# Debian trixie's docker.io and containerd, unpacked beside bookworm's (apt lists kept apart from
# the system's); bookworm's runc (trixie's needs a newer glibc). Its own containerd, data root,
# exec root, socket, bridge and address pool, so it never hands out another engine's subnets.
C_SOCK=unix:///var/run/docker-c.sock
if ! docker -H $C_SOCK version >/dev/null 2>&1; then
  T=$LAB/trixie
  if [ ! -x "$T/root/usr/sbin/dockerd" ]; then
    log "fetching Docker 26 and containerd from Debian trixie"
    mkdir -p "$T/lists/partial" "$T/cache/archives/partial" "$T/root"
    echo 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main' >"$T/sources.list"
    set -- -o Dir::Etc::sourcelist="$T/sources.list" -o Dir::Etc::sourceparts=/dev/null -o Dir::State::Lists="$T/lists" -o Dir::Cache="$T/cache"
    apt-get "$@" update -q >/dev/null
    (cd "$T" && apt-get "$@" download docker.io containerd >/dev/null)
    for d in "$T"/docker.io_*.deb "$T"/containerd_*.deb; do dpkg-deb -x "$d" "$T/root"; done
    rm -f "$T/root/usr/bin/runc" "$T/root/usr/sbin/runc"
    set --
  fi
  log "starting engine C (Docker 26, containerd image store)"
  mkdir -p "$LAB/c"
  echo '{"features": {"containerd-snapshotter": true}}' >"$LAB/c/daemon.json"
  printf 'version = 2\nroot = "/var/lib/containerd-c"\nstate = "/run/containerd-c"\n[grpc]\n  address = "/run/containerd-c/containerd.sock"\n[ttrpc]\n  address = "/run/containerd-c/containerd.sock.ttrpc"\n' >"$LAB/c/containerd.toml"
  bridge docker2 172.25.251.1/24
  containerd_up "$T/root/usr/bin" /run/containerd-c "$LAB/c/containerd.toml" "$LAB/c/containerd.log"
  PATH=$T/root/usr/bin:$T/root/usr/sbin:/usr/sbin:/usr/bin:/sbin:/bin setsid nohup "$T/root/usr/sbin/dockerd" \
    --config-file "$LAB/c/daemon.json" --containerd /run/containerd-c/containerd.sock \
    --data-root /var/lib/docker-c --exec-root /var/run/docker-c --pidfile /var/run/docker-c.pid \
    -H $C_SOCK --bridge docker2 --default-address-pool base=172.29.0.0/16,size=24 \
    --iptables=false --ip-masq=false >"$LAB/c/dockerd.log" 2>&1 < /dev/null &
  wait_for 60 docker -H $C_SOCK info || { cat "$LAB/c/dockerd.log" >&2; exit 1; }
fi

# --- engine D: Docker 28 with the containerd image store, on containerd 2 (issue 21)
# Debian forky's docker.io 28.5 and containerd 2.1 (their binaries need glibc <= 2.34, bookworm
# has 2.36), unpacked like engine C's; bookworm's runc. containerd 2 reads config version 3.
# Its own containerd, data root, exec root, pidfile, socket, bridge docker3 and address pool.
# Started before engine A for the same reason as engine C (a newer dockerd deletes docker0).
D_SOCK=unix:///var/run/docker-d.sock
if ! docker -H $D_SOCK version >/dev/null 2>&1; then
  F=$LAB/forky
  if [ ! -x "$F/root/usr/sbin/dockerd" ] || [ ! -x "$F/root/usr/bin/containerd" ]; then
    log "fetching Docker 28 and containerd 2 from Debian forky"
    mkdir -p "$F/lists/partial" "$F/cache/archives/partial" "$F/root"
    echo 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian forky main' >"$F/sources.list"
    set -- -o Dir::Etc::sourcelist="$F/sources.list" -o Dir::Etc::sourceparts=/dev/null -o Dir::State::Lists="$F/lists" -o Dir::Cache="$F/cache"
    apt-get "$@" update -q >/dev/null
    rm -f "$F"/docker.io_*.deb "$F"/containerd_*.deb
    (cd "$F" && apt-get "$@" download docker.io containerd >/dev/null)
    for d in "$F"/docker.io_*.deb "$F"/containerd_*.deb; do dpkg-deb -x "$d" "$F/root"; done
    rm -f "$F/root/usr/bin/runc" "$F/root/usr/sbin/runc"
    set --
  fi
  log "starting engine D (Docker 28, containerd 2, containerd image store)"
  mkdir -p "$LAB/d"
  echo '{"features": {"containerd-snapshotter": true}}' >"$LAB/d/daemon.json"
  # Kubernetes' CRI plugin is of no use to dockerd; left out, containerd starts faster.
  printf "version = 3\nroot = '/var/lib/containerd-d'\nstate = '/run/containerd-d'\ndisabled_plugins = ['io.containerd.grpc.v1.cri']\n[grpc]\n  address = '/run/containerd-d/containerd.sock'\n[ttrpc]\n  address = '/run/containerd-d/containerd.sock.ttrpc'\n" >"$LAB/d/containerd.toml"
  bridge docker3 172.25.252.1/24
  containerd_up "$F/root/usr/bin" /run/containerd-d "$LAB/d/containerd.toml" "$LAB/d/containerd.log"
  # A dockerd killed with the previous lab leaves its pidfile (dockerd refuses to start while the
  # pid in it is alive, and a recycled pid may be) and its socket behind.
  if [ -s /var/run/docker-d.pid ] && [ "$(cat "/proc/$(cat /var/run/docker-d.pid)/comm" 2>/dev/null)" != dockerd ]; then rm -f /var/run/docker-d.pid; fi
  rm -f /var/run/docker-d.sock
  PATH=$F/root/usr/bin:$F/root/usr/sbin:/usr/sbin:/usr/bin:/sbin:/bin setsid nohup "$F/root/usr/sbin/dockerd" \
    --config-file "$LAB/d/daemon.json" --containerd /run/containerd-d/containerd.sock \
    --data-root /var/lib/docker-d --exec-root /var/run/docker-d --pidfile /var/run/docker-d.pid \
    -H $D_SOCK --bridge docker3 --default-address-pool base=172.28.0.0/16,size=24 \
    --iptables=false --ip6tables=false --ip-masq=false >"$LAB/d/dockerd.log" 2>&1 < /dev/null &
  wait_for 60 docker -H $D_SOCK info || { cat "$LAB/d/dockerd.log" >&2; exit 1; }
fi

# --- engine A
# Docker 26 (engine C) deletes the default bridge docker0 whenever it starts, and engine A's
# containers then fail to start ("could not find bridge docker0"): engine C starts first, and
# engine A is restarted (recreating docker0) when its bridge is gone.
if docker -H unix:///var/run/docker.sock version >/dev/null 2>&1 && ! ip link show docker0 >/dev/null 2>&1; then
  log "restarting engine A (its bridge docker0 is gone)"
  pid=$(cat /var/run/docker.pid)
  kill "$pid"
  wait_for 60 sh -c "! kill -0 $pid 2>/dev/null" || exit 1
fi
if ! docker -H unix:///var/run/docker.sock version >/dev/null 2>&1; then
  log "starting engine A"
  setsid nohup dockerd -H unix:///var/run/docker.sock --bip 172.17.0.1/16 \
    --default-address-pool base=172.27.0.0/16,size=24 >"$LAB/dockerd-a.log" 2>&1 < /dev/null &
  wait_for 60 docker -H unix:///var/run/docker.sock info || { cat "$LAB/dockerd-a.log" >&2; exit 1; }
fi

# --- engine B
if ! docker -H unix:///var/run/docker-b.sock version >/dev/null 2>&1; then
  log "starting engine B"
  bridge docker1 172.31.250.1/24
  setsid nohup dockerd --data-root /var/lib/docker-b --exec-root /var/run/docker-b \
    --pidfile /var/run/docker-b.pid -H unix:///var/run/docker-b.sock --bridge docker1 \
    --default-address-pool base=172.26.0.0/16,size=24 \
    --iptables=false --ip-masq=false >"$LAB/dockerd-b.log" 2>&1 < /dev/null &
  wait_for 60 docker -H unix:///var/run/docker-b.sock info || { cat "$LAB/dockerd-b.log" >&2; exit 1; }
fi
# Engine A's iptables rules set the FORWARD policy to DROP and only accept traffic on its own
# bridges; engine B runs without iptables, so traffic between two containers on one of B's
# networks would be dropped (on a host of its own, B's rules would accept it). Accept what stays
# on one bridge, as each engine does for its own.
iptables -C DOCKER-USER -m physdev --physdev-is-bridged -j ACCEPT 2>/dev/null ||
  iptables -I DOCKER-USER -m physdev --physdev-is-bridged -j ACCEPT

# --- registry
if ! wget -q -O /dev/null http://127.0.0.1:5000/v2/ 2>/dev/null && ! curl -fsS http://127.0.0.1:5000/v2/ >/dev/null 2>&1; then
  log "starting registry"
  mkdir -p "$LAB/registry"
  cat >"$LAB/registry.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $LAB/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
YML
  setsid nohup docker-registry serve "$LAB/registry.yml" >"$LAB/registry.log" 2>&1 < /dev/null &
  wait_for 30 sh -c 'exec 3<>/dev/tcp/127.0.0.1/5000' 2>/dev/null || wait_for 30 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5000' || { cat "$LAB/registry.log" >&2; exit 1; }
fi

# --- sshd reaching engine B
mkdir -p /run/sshd "$LAB/ssh"
[ -f "$LAB/ssh/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$LAB/ssh/host_ed25519"
[ -f "$LAB/ssh/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C ferry-lab -f "$LAB/ssh/id_ed25519"
mkdir -p /root/.ssh && chmod 700 /root/.ssh
grep -qF "$(cut -d' ' -f2 "$LAB/ssh/id_ed25519.pub")" /root/.ssh/authorized_keys 2>/dev/null || cat "$LAB/ssh/id_ed25519.pub" >> /root/.ssh/authorized_keys
# A key encrypted with a passphrase, to test ferry's passphrase prompt (tests drive it through a pty).
[ -f "$LAB/ssh/id_ed25519_enc" ] || ssh-keygen -q -t ed25519 -N 'ferry-lab-key-passphrase' -C ferry-lab-enc -f "$LAB/ssh/id_ed25519_enc"
grep -qF "$(cut -d' ' -f2 "$LAB/ssh/id_ed25519_enc.pub")" /root/.ssh/authorized_keys 2>/dev/null || cat "$LAB/ssh/id_ed25519_enc.pub" >> /root/.ssh/authorized_keys
chmod 600 /root/.ssh/authorized_keys
# Port 2223 is the same host with socket forwarding refused: ferry must fall back to
# `docker system dial-stdio` there.
cat >"$LAB/ssh/sshd_config" <<CFG
Port 2222
Port 2223
ListenAddress 127.0.0.1
HostKey $LAB/ssh/host_ed25519
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AllowStreamLocalForwarding yes
Subsystem sftp internal-sftp
PidFile $LAB/ssh/sshd.pid
MaxStartups 10:30:100
Match LocalPort 2223
  AllowStreamLocalForwarding no
CFG
lab_sshd "$LAB/ssh/sshd_config" "$LAB/ssh/sshd.pid" "$LAB/sshd.log" /var/run/docker-b.sock 2222 2223
# --- sshd reaching engine C (Docker 26, containerd image store): 127.0.0.1:2224
# The same setup as above, in a mount namespace of its own where engine C's socket is
# bind-mounted over /var/run/docker.sock: an ssh:// host whose engine is the containerd store.
# Started again when its sessions no longer reach engine C (an engine restart replaces or unlinks
# the socket, and the bind mount goes stale or is detached).
cat >"$LAB/ssh/sshd_c_config" <<CFG
Port 2224
ListenAddress 127.0.0.1
HostKey $LAB/ssh/host_ed25519
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AllowStreamLocalForwarding yes
Subsystem sftp internal-sftp
PidFile $LAB/ssh/sshd-c.pid
MaxStartups 10:30:100
CFG
lab_sshd "$LAB/ssh/sshd_c_config" "$LAB/ssh/sshd-c.pid" "$LAB/sshd-c.log" /var/run/docker-c.sock 2224
# known_hosts for the lab host, in OpenSSH's bracketed form for a non-22 port
printf '[127.0.0.1]:%s %s\n' 2222 "$(cut -d' ' -f1,2 "$LAB/ssh/host_ed25519.pub")" 2223 "$(cut -d' ' -f1,2 "$LAB/ssh/host_ed25519.pub")" 2224 "$(cut -d' ' -f1,2 "$LAB/ssh/host_ed25519.pub")" > "$LAB/ssh/known_hosts"

# --- Podman's Docker-compatible API service
# Podman gives containers nofile/nproc limits above what this machine's root may set; cap them.
mkdir -p /etc/containers /run/podman
want_conf=$(printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=4096:4096"]\n' "$(ulimit -Hn)" "$(ulimit -Hn)")
if [ "$(cat /etc/containers/containers.conf 2>/dev/null)" != "$want_conf" ]; then
  printf '%s\n' "$want_conf" > /etc/containers/containers.conf
  pkill -f 'podman system service' 2>/dev/null || true
  sleep 1
fi
podman_up() { curl -sf --unix-socket /run/podman/podman.sock http://d/_ping >/dev/null 2>&1 || docker -H unix:///run/podman/podman.sock version >/dev/null 2>&1; }
if ! podman_up; then
  log "starting podman system service on /run/podman/podman.sock"
  setsid nohup podman system service --time=0 unix:///run/podman/podman.sock >"$LAB/podman.log" 2>&1 < /dev/null &
  wait_for 30 podman_up || { cat "$LAB/podman.log" >&2; exit 1; }
fi

# --- S3: Ceph RadosGW (a real S3 server) from bookworm's packages, a single-node cluster on loopback:
# one mon, one bluestore OSD on a sparse file, RGW on 127.0.0.1:7480, no mgr. A user `ferry-ci`
# owning the bucket `ferry-test`, and a user `ferry-other` with no rights on it (permission tests).
# Each daemon is asked whether it answers (mon: `ceph mon stat`, osd: its admin socket, rgw: HTTP),
# never judged by a pid or socket file: a lab that was killed leaves both behind.
S3=$LAB/s3
S3_PORT=7480
S3_AK=FERRYCIACCESSKEY0001
S3_SK=ferry-ci-secret-key-0000000000000000001
S3_OTHER_AK=FERRYOTHERACCESSKEY1
S3_OTHER_SK=ferry-other-secret-key-00000000000000001
S3_BUCKET=ferry-test
rgw_up() { curl -s -o /dev/null --max-time 3 "http://127.0.0.1:$S3_PORT/"; }
if ! rgw_up || [ ! -s "$S3/s3.env" ]; then
  for p in ceph-mon ceph-osd radosgw; do
    dpkg -s "$p" >/dev/null 2>&1 || { log "installing ceph-mon ceph-osd radosgw"; apt-get update -q >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ceph-mon ceph-osd radosgw >/dev/null; break; }
  done
  D=$S3/ceph
  export CEPH_CONF=$D/ceph.conf
  mkdir -p "$D/mon/a" "$D/osd/0" "$D/run" "$D/log" "$D/tmp/crash" "$D/tmp/rgw"
  [ -s "$D/fsid" ] || cat /proc/sys/kernel/random/uuid >"$D/fsid"
  osd_gb=32 # sparse: disk is used only as data is written
  avail_gb=$(( $(df -Pk "$D" | awk 'NR==2{print $4}') / 1048576 ))
  [ -e "$D/osd/0/block" ] || [ $osd_gb -le $((avail_gb - 5)) ] || osd_gb=$((avail_gb - 5))
  [ $osd_gb -ge 4 ] || { log "not enough disk for the S3 lab under $D"; exit 1; }
  cat >"$CEPH_CONF" <<EOF
[global]
fsid = $(cat "$D/fsid")
mon host = [v2:127.0.0.1:3300,v1:127.0.0.1:6789]
mon initial members = a
public network = 127.0.0.0/8
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
run dir = $D/run
admin socket = $D/run/\$name.asok
pid file = $D/run/\$name.pid
log file = $D/log/\$name.log
mon cluster log file = $D/log/cluster.log
crash dir = $D/tmp/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
[mon]
mon data = $D/mon/\$id
[osd]
osd data = $D/osd/\$id
osd objectstore = bluestore
bluestore block create = true
bluestore block size = $((osd_gb * 1024 * 1024 * 1024))
bluestore fsck on mount = false
osd memory target = 1073741824
[client.rgw.a]
# radosgw asks for ms_mon_client_mode=secure, which auth=none cannot give
ms mon client mode = crc secure
rgw data = $D/tmp/rgw
rgw frontends = beast endpoint=127.0.0.1:$S3_PORT
# free the space of deleted objects after about a minute, not two hours
rgw gc obj min wait = 60
rgw gc processor period = 60
EOF
  if [ ! -e "$D/mon/a/.ferry-done" ]; then
    log "creating the S3 lab's ceph monitor"
    rm -rf "$D/mon/a" && mkdir -p "$D/mon/a"
    monmaptool --create --addv a '[v2:127.0.0.1:3300,v1:127.0.0.1:6789]' --fsid "$(cat "$D/fsid")" \
      --enable-all-features --set-min-mon-release pacific "$D/tmp/monmap" >/dev/null
    ceph-mon --mkfs -i a --monmap "$D/tmp/monmap" && touch "$D/mon/a/.ferry-done"
  fi
  mon_up() { timeout 10 ceph --connect-timeout 5 mon stat; }
  osd_up() { timeout 10 ceph --admin-daemon "$D/run/osd.0.asok" version; }
  osd_in() { timeout 10 ceph --connect-timeout 5 osd stat | grep -q ' 1 up'; }
  if ! timeout 5 ceph --connect-timeout 3 mon stat >/dev/null 2>&1; then
    log "starting the S3 lab's ceph-mon"
    setsid nohup ceph-mon -f -i a >>"$D/log/mon.out" 2>&1 </dev/null &
    wait_for 60 mon_up || { tail -n 30 "$D/log/mon.out" "$D/log/mon.a.log" >&2; exit 1; }
  fi
  if [ ! -e "$D/osd/0/mkfs_done" ]; then
    [ -s "$D/osd/0/.uuid" ] || cat /proc/sys/kernel/random/uuid >"$D/osd/0/.uuid"
    id=$(ceph osd new "$(cat "$D/osd/0/.uuid")")
    [ "$id" = 0 ] || { log "unexpected osd id $id"; exit 1; }
    log "creating the S3 lab's OSD (${osd_gb} GiB sparse file)"
    ceph-osd -i 0 --mkfs --osd-uuid "$(cat "$D/osd/0/.uuid")" >>"$D/log/osd.0.mkfs" 2>&1
  fi
  if ! osd_up >/dev/null 2>&1; then
    log "starting the S3 lab's ceph-osd"
    setsid nohup ceph-osd -f -i 0 >>"$D/log/osd.out" 2>&1 </dev/null &
    wait_for 120 osd_up || { tail -n 30 "$D/log/osd.out" "$D/log/osd.0.log" >&2; exit 1; }
  fi
  wait_for 120 osd_in || { log "the S3 lab's OSD did not come up"; exit 1; }
  if ! rgw_up; then
    log "starting the S3 lab's radosgw on 127.0.0.1:$S3_PORT"
    setsid nohup radosgw -f -n client.rgw.a >>"$D/log/rgw.out" 2>&1 </dev/null &
    wait_for 180 rgw_up || { tail -n 30 "$D/log/rgw.out" "$D/log/client.rgw.a.log" >&2; exit 1; }
  fi
  radosgw-admin user info --uid=ferry-ci >/dev/null 2>&1 ||
    radosgw-admin user create --uid=ferry-ci --display-name="ferry CI" --access-key="$S3_AK" --secret-key="$S3_SK" >/dev/null
  radosgw-admin user info --uid=ferry-other >/dev/null 2>&1 ||
    radosgw-admin user create --uid=ferry-other --display-name="ferry CI, no rights" --access-key="$S3_OTHER_AK" --secret-key="$S3_OTHER_SK" >/dev/null
  code=$(curl -s -o "$D/tmp/mkbucket.out" -w '%{http_code}' -X PUT --aws-sigv4 "aws:amz:us-east-1:s3" \
    --user "$S3_AK:$S3_SK" -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "http://127.0.0.1:$S3_PORT/$S3_BUCKET")
  [ "$code" = 200 ] || grep -q BucketAlreadyOwnedByYou "$D/tmp/mkbucket.out" || { cat "$D/tmp/mkbucket.out" >&2; log "S3 bucket: HTTP $code"; exit 1; }
  printf 'S3_ENDPOINT=http://127.0.0.1:%s\nS3_BUCKET=%s\nAWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\nAWS_REGION=us-east-1\n' \
    "$S3_PORT" "$S3_BUCKET" "$S3_AK" "$S3_SK" >"$S3/s3.env"
  unset CEPH_CONF
fi

# --- test images, built offline from busybox-static
busybox_rootfs() {
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root" "$root/www"
  chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/www:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$root/etc/passwd"
  printf 'root:x:0:\nwww:x:33:\nnogroup:x:65534:\n' > "$root/etc/group"
  echo '<h1>ferry</h1>' > "$root/www/index.html"
  echo "$root"
}
for h in unix:///var/run/docker.sock unix:///var/run/docker-b.sock unix:///run/podman/podman.sock $C_SOCK $D_SOCK; do
  docker -H $h image inspect ferry-test/busybox:1 >/dev/null 2>&1 && continue
  log "building ferry-test/busybox:1 on $h"
  root=$(busybox_rootfs)
  tar -C "$root" -c . | docker -H $h import -c 'CMD ["/bin/sh"]' -c 'ENV PATH=/bin' - ferry-test/busybox:1 >/dev/null
  rm -rf "$root"
done
log "ready"
