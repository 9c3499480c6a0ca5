#!/usr/bin/env bash
# A one-node Slurm on this machine for the Slurm test lane (`make test-slurm`, tests/test_slurm.py).
#
# Installs the Debian packages if they are missing (slurmctld, slurmd, slurm-client, munge), makes
# a munge key, writes /etc/slurm/slurm.conf for this host (its real cores and memory, partitions
# `cpu` (the default) and `gpu`, both on this node) and starts munged, slurmctld and slurmd (the
# two Slurm daemons as root). The node has one stand-in GPU, a gres backed by /dev/null, so that a
# job asking for `--gpus=1` (how the slurm executor asks for our rules' `gpu` resource) is
# accepted and starts; nothing in it can use a real GPU. There is no accounting database, so
# `sacct` fails here and `squeue` answers (finished jobs stay listed for MinJobAge, 5 minutes);
# every finished job is also recorded in /var/log/slurm/jobcomp.log (partition, start, end).
#
# Idempotent: a second call finds Slurm running and only says so.
# Exit status: 0 Slurm is up; 77 Slurm cannot be had on this machine (not root, no apt-get, the
# packages cannot be installed, or a slurm.conf that this script did not write): the tests skip
# with the line printed; 1 it is installed but would not start (the line names the logs).
set -euo pipefail

readonly SKIP=77
readonly CONF=/etc/slurm/slurm.conf
readonly GRES_CONF=/etc/slurm/gres.conf
readonly MARK="# Written by voice-train's tests/slurm/start_slurm.sh: a one-node test cluster."
readonly LOGS=/var/log/slurm
readonly PACKAGES=(slurmctld slurmd slurm-client munge)
HOST=$(hostname -s)
readonly HOST
started=$SECONDS

unavailable() {
	echo "slurm unavailable: $*" >&2
	exit "$SKIP"
}

failed() {
	echo "slurm did not start: $*" >&2
	exit 1
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# The node answers and can take jobs (idle, or busy with earlier ones).
node_up() {
	local state
	state=$(sinfo --noheader --Node --nodes "$HOST" --format %t 2>/dev/null | head -n 1) || return 1
	case "$state" in idle | mix | alloc | comp) return 0 ;; *) return 1 ;; esac
}

install_packages() {
	local cmd missing=()
	for cmd in slurmctld slurmd sbatch munged; do
		command -v "$cmd" >/dev/null || missing+=("$cmd")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	is_root || unavailable "${missing[*]} not installed, and only root can install them (sudo $0)"
	command -v apt-get >/dev/null || unavailable "${missing[*]} not installed and there is no apt-get"
	local log
	log=$(mktemp)
	# A fresh machine may have no package lists yet: update once, only when the first try fails.
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" \
		>"$log" 2>&1; then
		DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$log" 2>&1 || true
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" \
			>>"$log" 2>&1 || unavailable "apt-get could not install ${PACKAGES[*]}: $(tail -n 1 "$log")"
	fi
	rm -f "$log"
}

start_munge() {
	if [ ! -s /etc/munge/munge.key ]; then
		mungekey --create --keyfile /etc/munge/munge.key
		chown munge:munge /etc/munge/munge.key
		chmod 0400 /etc/munge/munge.key
	fi
	munge --no-input >/dev/null 2>&1 && return 0
	install -d -o munge -g munge -m 0755 /run/munge
	runuser -u munge -- /usr/sbin/munged
	munge --no-input >/dev/null 2>&1 || failed "munged does not answer (see /var/log/munge/munged.log)"
}

# The node as slurmd sees it (cores, memory), reachable on the loopback address, with the GPU gres.
slurm_conf() {
	local node
	node=$(slurmd -C | head -n 1 | sed "s/^NodeName=[^ ]*/NodeName=$HOST NodeAddr=127.0.0.1/")
	cat <<EOF
$MARK
ClusterName=voicetrain
SlurmctldHost=$HOST(127.0.0.1)
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
# No cgroups: processes are tracked through /proc, so it runs in containers too.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
# Cores, memory and GPUs are what jobs ask for and are given.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
GresTypes=gpu
ReturnToService=2
# Finished jobs stay in squeue for 5 minutes: the executor's status command sees them end.
MinJobAge=300
KillWait=5
JobCompType=jobcomp/filetxt
JobCompLoc=$LOGS/jobcomp.log
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/lib/slurm/slurmd
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
$node Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST MaxTime=INFINITE State=UP
EOF
}

stop_daemon() {
	local pidfile=$1
	if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
		kill "$(cat "$pidfile")"
		while kill -0 "$(cat "$pidfile")" 2>/dev/null; do sleep 0.2; done
	fi
}

daemon_running() {
	[ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

# Writes the configuration; returns 0 when it changed (running daemons must restart to read it).
write_conf() {
	if [ -e "$CONF" ] && ! grep -qxF "$MARK" "$CONF"; then
		unavailable "$CONF exists and was not written by this script (a real Slurm?); not touching it"
	fi
	local new gres="NodeName=$HOST Name=gpu File=/dev/null"
	new=$(slurm_conf)
	if [ -e "$CONF" ] && [ "$new" = "$(cat "$CONF")" ] && [ "$gres" = "$(cat "$GRES_CONF" 2>/dev/null)" ]; then
		return 1
	fi
	mkdir -p /etc/slurm "$LOGS" /var/lib/slurm/slurmd /var/lib/slurm/slurmctld
	printf '%s\n' "$new" >"$CONF"
	printf '%s\n' "$gres" >"$GRES_CONF"
}

wait_for_node() {
	local deadline=$((SECONDS + 60)) resumed=""
	until node_up; do
		[ $SECONDS -lt $deadline ] || failed "node $HOST is not up after 60 s (see $LOGS/slurmctld.log, $LOGS/slurmd.log)"
		# A node left down or drained by an earlier configuration comes back once it registers.
		if [ -z "$resumed" ] && sinfo --noheader --Node --nodes "$HOST" --format %t 2>/dev/null |
			grep -qE '^(down|drain|drng|inval)'; then
			scontrol update NodeName="$HOST" State=RESUME 2>/dev/null && resumed=yes
		fi
		sleep 0.5
	done
}

main() {
	if command -v sinfo >/dev/null && [ -e "$CONF" ] && grep -qxF "$MARK" "$CONF" && node_up; then
		echo "slurm already running: partitions $(sinfo --noheader --format %R | paste -sd, -) on $HOST"
		return 0
	fi
	install_packages
	is_root || unavailable "Slurm is installed but not running, and only root can start it (sudo $0)"
	start_munge
	if write_conf; then
		stop_daemon /run/slurmd.pid
		stop_daemon /run/slurmctld.pid
	fi
	daemon_running /run/slurmctld.pid || slurmctld || failed "slurmctld exited (see $LOGS/slurmctld.log)"
	daemon_running /run/slurmd.pid || slurmd || failed "slurmd exited (see $LOGS/slurmd.log)"
	wait_for_node
	local size
	size=$(sinfo --noheader --Node --nodes "$HOST" --format '%c CPUs, %m MB, %G' | head -n 1)
	echo "slurm up in $((SECONDS - started)) s: partitions cpu (default) and gpu on $HOST ($size)"
}

main "$@"
