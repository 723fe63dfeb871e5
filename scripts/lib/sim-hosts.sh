# Simulated hosts ("droplets", VMs) for end-to-end tests: sourced, never run directly.
#
# Each host is a container of scripts/lib/sim-host/Dockerfile (Debian bookworm with its own
# Docker Engine, sshd, ufw, cloud-init, docker-registry) that boots like a cloud VM: its
# cloud-init user-data comes from a NoCloud seed, its inner dockerd keeps images and
# containers on a volume of its own, and a restart of the container is a reboot (see
# scripts/lib/sim-host/sim-init for what runs at boot). Hosts sit on two networks the
# caller's test creates: "public" and "private", with subnets it chooses.
#
#   SIM_PREFIX=droplets                    names of everything made: $SIM_PREFIX-host-image,
#                                          -public/-private networks, -<host> containers,
#                                          -<host>-docker volumes (set before sourcing or
#                                          before the first call)
#   SIM_PUBLIC_SUBNET / SIM_PRIVATE_SUBNET e.g. 192.168.231.0/24 and 172.31.231.0/24
#   sim_build_image                        builds $SIM_IMAGE (default $SIM_PREFIX-host)
#   sim_networks_create                    both networks (the private one --internal: no
#                                          route out, as a VPC without a NAT gateway)
#   sim_gateway public|private             the address the test machine has on a network
#                                          (what a host sees as the "admin address")
#   sim_host_boot NAME PUBLIC_IP PRIVATE_IP USER_DATA_FILE
#                                          creates and starts the host; cloud-init applies
#                                          USER_DATA_FILE at its first boot
#   sim_host_wait_booted NAME [SECONDS]    until sim-init logged "up" for the current boot
#   sim_host_wait_ssh USER IP KEY [SECONDS]
#                                          until `ssh USER@IP true` works with KEY
#   sim_host_wait_docker NAME [SECONDS]    until the host's inner dockerd answers
#   sim_host_exec NAME CMD...              a command as root inside the host (the console)
#   sim_host_reboot NAME                   docker restart: inner dockerd stopped first
#   sim_host_logs NAME                     its boot log (sim-init + cloud-init outputs)
#   sim_teardown                           removes the hosts, their volumes and the networks
#                                          this shell created (never anything else)
#   sim_ssh_init DIR                       an SSH key pair made now (DIR/id_ed25519), an ssh
#                                          config using it with DIR/known_hosts, and DIR/bin/ssh,
#                                          a wrapper reading that config: put DIR/bin first in
#                                          PATH and DOCKER_HOST=ssh://deploy@IP works unprompted
#   sim_ssh USER IP KEY CMD...             ssh with the test's own known_hosts (no prompts)
#
# The caller defines log() and fail(). Hosts need a kernel and engine that allow the
# capabilities below; `--privileged` is not used (refused where CAP_SYS_RESOURCE is
# missing): all capabilities but SYS_RESOURCE, no seccomp/AppArmor confinement, writable
# /sys/fs/cgroup, and /var/lib/docker on a named volume (so the inner engine uses overlay2:
# on the container's own overlay root it falls back to vfs, where non-root images fail).

# shellcheck shell=bash

SIM_PREFIX=${SIM_PREFIX:-sim}
SIM_PUBLIC_SUBNET=${SIM_PUBLIC_SUBNET:-}
SIM_PRIVATE_SUBNET=${SIM_PRIVATE_SUBNET:-}
SIM_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SIM_HOSTS=()
SIM_NETWORKS=()
SIM_KNOWN_HOSTS=${SIM_KNOWN_HOSTS:-}

sim_image() { echo "${SIM_IMAGE:-$SIM_PREFIX-host}"; }

sim_build_image() {
  # The base is the Dockerfile's own (debian:bookworm-slim, pulled or made by
  # deploy/offline-images.sh); apt runs inside the build, so the build needs a Debian mirror.
  local image
  image=$(sim_image)
  log "building the simulated host image $image (cached after the first time)"
  timeout 1200 docker build --quiet --tag "$image" "$SIM_LIB_DIR/sim-host" >/dev/null 2>&1 \
    || fail "docker build of $SIM_LIB_DIR/sim-host failed"
}

sim_networks_create() {
  [ -n "$SIM_PUBLIC_SUBNET" ] && [ -n "$SIM_PRIVATE_SUBNET" ] \
    || fail "set SIM_PUBLIC_SUBNET and SIM_PRIVATE_SUBNET before sim_networks_create"
  # What a kept run (E2E_KEEP) of this same prefix left: its hosts carry our label.
  local name volume
  for name in $(docker ps -aq --filter "label=org.hitscale.sim-host=$SIM_PREFIX"); do
    volume=$(docker inspect --format '{{ index .Config.Labels "org.hitscale.sim-host.volume" }}' "$name")
    docker rm -f "$name" >/dev/null 2>&1
    [ -n "$volume" ] && docker volume rm "$volume" >/dev/null 2>&1
  done
  for name in public private; do
    docker network rm "$SIM_PREFIX-$name" >/dev/null 2>&1 || true
  done
  docker network create --subnet "$SIM_PUBLIC_SUBNET" --gateway "$(sim_first_address "$SIM_PUBLIC_SUBNET")" \
    "$SIM_PREFIX-public" >/dev/null \
    || fail "cannot create network $SIM_PREFIX-public ($SIM_PUBLIC_SUBNET)"
  SIM_NETWORKS+=("$SIM_PREFIX-public")
  docker network create --internal --subnet "$SIM_PRIVATE_SUBNET" \
    --gateway "$(sim_first_address "$SIM_PRIVATE_SUBNET")" "$SIM_PREFIX-private" >/dev/null \
    || fail "cannot create network $SIM_PREFIX-private ($SIM_PRIVATE_SUBNET)"
  SIM_NETWORKS+=("$SIM_PREFIX-private")
}

sim_first_address() { # subnet
  python3 -c 'import ipaddress, sys; print(next(ipaddress.ip_network(sys.argv[1]).hosts()))' "$1"
}

sim_gateway() { # public|private
  docker network inspect --format '{{ (index .IPAM.Config 0).Gateway }}' "$SIM_PREFIX-$1"
}

sim_host_boot() { # name public_ip private_ip user_data_file
  local name=$1 public_ip=$2 private_ip=$3 user_data=$4
  local container="$SIM_PREFIX-$name" volume="$SIM_PREFIX-$name-docker"
  [ -r "$user_data" ] || fail "user-data $user_data is not readable"
  docker rm -f "$container" >/dev/null 2>&1 || true
  docker volume rm "$volume" >/dev/null 2>&1 || true
  SIM_HOSTS+=("$name")
  docker volume create "$volume" >/dev/null
  # Attached to the public network at create time, the private one before start, so eth0 is
  # public and eth1 private, as on a droplet with a VPC interface.
  docker create --name "$container" --hostname "$name" \
    --label "org.hitscale.sim-host=$SIM_PREFIX" --label "org.hitscale.sim-host.volume=$volume" \
    --cap-add ALL --cap-drop SYS_RESOURCE \
    --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    --security-opt systempaths=unconfined \
    -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
    -v "$volume:/var/lib/docker" \
    --tmpfs /run:exec,mode=755 --tmpfs /tmp:exec,mode=1777 \
    --network "$SIM_PREFIX-public" --ip "$public_ip" \
    --stop-timeout 60 \
    "$(sim_image)" >/dev/null || fail "cannot create host $name"
  docker network connect --ip "$private_ip" "$SIM_PREFIX-private" "$container" \
    || fail "cannot attach host $name to $SIM_PREFIX-private"
  # The NoCloud seed, as a config drive would carry it. instance-id fixed per host name, so
  # a reboot is not a new instance (per-instance modules run once).
  local seed
  seed=$(mktemp -d)
  printf 'instance-id: %s-%s\nlocal-hostname: %s\n' "$SIM_PREFIX" "$name" "$name" >"$seed/meta-data"
  cp "$user_data" "$seed/user-data"
  docker cp "$seed/." "$container:/var/lib/cloud/seed/nocloud/" >/dev/null \
    || fail "cannot copy the NoCloud seed into $name"
  rm -rf "$seed"
  docker start "$container" >/dev/null || fail "cannot start host $name"
}

# Bounded like every wait of a test (SIM_EXEC_TIMEOUT seconds, default 300): a host whose
# engine or init hangs fails the test instead of holding it.
sim_host_exec() { # name cmd...
  local name=$1
  shift
  timeout "${SIM_EXEC_TIMEOUT:-300}" docker exec "$SIM_PREFIX-$name" "$@"
}

sim_host_logs() { # name
  timeout 30 docker exec "$SIM_PREFIX-$1" sh -c 'cat /var/log/sim-init.log; tail -n 40 /var/log/cloud-init-output.log 2>/dev/null' 2>&1
}

# Boots are counted by sim-init's "boot" lines: the current boot is up when its count of
# "up" lines reached the "boot" lines.
sim_host_wait_booted() { # name [seconds]
  local name=$1 limit=${2:-300} deadline boots ups
  deadline=$((SECONDS + limit))
  while [ "$SECONDS" -lt "$deadline" ]; do
    boots=$(timeout 10 docker exec "$SIM_PREFIX-$name" grep -c ' sim-init: boot$' /var/log/sim-init.log 2>/dev/null || true)
    ups=$(timeout 10 docker exec "$SIM_PREFIX-$name" grep -c ' sim-init: up$' /var/log/sim-init.log 2>/dev/null || true)
    if [ "${boots:-0}" -gt 0 ] && [ "${ups:-0}" -ge "${boots:-0}" ]; then return 0; fi
    sleep 1
  done
  sim_host_logs "$name" >&2
  fail "host $name did not finish booting in ${limit}s"
}

sim_host_wait_docker() { # name [seconds]
  local name=$1 limit=${2:-120} deadline
  deadline=$((SECONDS + limit))
  while [ "$SECONDS" -lt "$deadline" ]; do
    timeout 20 docker exec "$SIM_PREFIX-$name" docker info >/dev/null 2>&1 && return 0
    sleep 1
  done
  timeout 30 docker exec "$SIM_PREFIX-$name" tail -n 30 /var/log/docker.log >&2 || true
  fail "the inner dockerd of host $name does not answer after ${limit}s"
}

sim_ssh_init() { # dir
  local dir=$1
  mkdir -p "$dir/bin"
  chmod 0700 "$dir"
  ssh-keygen -q -t ed25519 -N '' -C "sim-hosts-test" -f "$dir/id_ed25519" || fail "ssh-keygen failed"
  : >"$dir/known_hosts"
  cat >"$dir/ssh_config" <<EOF
Host *
  IdentityFile $dir/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $dir/known_hosts
  StrictHostKeyChecking accept-new
  BatchMode yes
  ConnectTimeout 10
  # A connection whose peer went away without closing it (a host rebooted) is given up
  # after 15 s of silence, not the kernel's quarter of an hour of retransmissions.
  ServerAliveInterval 5
  ServerAliveCountMax 3
  LogLevel ERROR
  # One connection per host reused by the many short commands of a test (Docker's ssh too).
  ControlMaster auto
  ControlPath $dir/cm-%C
  ControlPersist 30
EOF
  printf '#!/bin/sh\nexec %s -F %s "$@"\n' "$(command -v ssh)" "$dir/ssh_config" >"$dir/bin/ssh"
  chmod 0755 "$dir/bin/ssh"
  SIM_KNOWN_HOSTS="$dir/known_hosts"
  SIM_SSH_KEY="$dir/id_ed25519"
}

sim_ssh() { # user ip key cmd...
  local user=$1 ip=$2 key=$3
  shift 3
  [ -n "$SIM_KNOWN_HOSTS" ] || fail "set SIM_KNOWN_HOSTS to a file of the test's own"
  ssh -i "$key" -o BatchMode=yes -o IdentitiesOnly=yes -o ConnectTimeout=5 \
    -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile="$SIM_KNOWN_HOSTS" \
    -o LogLevel=ERROR "$user@$ip" "$@"
}

sim_host_wait_ssh() { # user ip key [seconds]
  local user=$1 ip=$2 key=$3 limit=${4:-120} deadline
  deadline=$((SECONDS + limit))
  while [ "$SECONDS" -lt "$deadline" ]; do
    timeout 15 bash -c "$(declare -f sim_ssh fail log); SIM_KNOWN_HOSTS='$SIM_KNOWN_HOSTS' sim_ssh '$user' '$ip' '$key' true" \
      >/dev/null 2>&1 && return 0
    sleep 1
  done
  fail "ssh $user@$ip does not answer after ${limit}s"
}

sim_host_reboot() { # name
  timeout 120 docker restart --time 60 "$SIM_PREFIX-$1" >/dev/null || fail "cannot restart host $1"
}

sim_teardown() {
  local name
  for name in "${SIM_HOSTS[@]}"; do
    timeout 90 docker rm -f "$SIM_PREFIX-$name" >/dev/null 2>&1
    docker volume rm "$SIM_PREFIX-$name-docker" >/dev/null 2>&1
  done
  SIM_HOSTS=()
  for name in "${SIM_NETWORKS[@]}"; do
    docker network rm "$name" >/dev/null 2>&1
  done
  SIM_NETWORKS=()
  return 0
}
