#!/usr/bin/env bash
# SLURM launches: a one-node cluster of the test's own (munged, slurmctld and slurmd as root, on
# private ports and sockets, in a scratch folder), then
#  - the process-group tests under `srun --mpi=pmix -n 2` (rank, world, node-local rank from MPI);
#  - `srun --mpi=pmix -n 2 tsumugi train` gives byte-identical weights to `mpirun -np 2`
#    (deterministic mode);
#  - tools/slurm/train.sbatch under sbatch trains; the time limit's SIGTERM (its
#    `--signal TERM@300`, sent here with `scancel --signal=TERM`) ends the job with a checkpoint of
#    the step in progress and exit 0; submitted again, the job resumes from that checkpoint.
# Usage: slurm_test.sh TSUMUGI TEST_DIST MPIEXEC   (exit 77, skipped: SLURM or munge missing, or
# not root; tools/setup-debian.sh installs slurmd, slurmctld, slurm-client and munge)
set -euo pipefail
tsumugi=$(realpath "$1")
test_dist=$(realpath "$2")
mpiexec=$3
repo=$(cd "$(dirname "$0")/../.." && pwd)
for tool in munged mungekey slurmctld slurmd srun sbatch squeue scancel scontrol sinfo; do
  command -v "$tool" > /dev/null || { echo "SKIP: $tool not found"; exit 77; }
done
[ "$(id -u)" -eq 0 ] || { echo "SKIP: the SLURM daemons of this test run as root"; exit 77; }

work=$(mktemp -d)
cluster=$work/cluster
mkdir -p "$cluster"/{munge,state,spool,log}
chmod 700 "$cluster/munge"
stop_daemons() {
  local name
  for name in slurmd slurmctld munged; do
    [ -f "$cluster/$name.pid" ] && kill "$(cat "$cluster/$name.pid")" 2> /dev/null || true
  done
  sleep 1
}
show_logs() { tail -n 20 "$cluster"/log/*.log "$cluster/munge/munged.log" 2> /dev/null || true; }
trap 'stop_daemons; rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; show_logs; exit 1; }

source "$repo/tests/train/cli/fixture.sh"
make_fixture

# The cluster: one node named as this host, reached at 127.0.0.1.
host=$(hostname -s)
port=$((20000 + RANDOM % 20000))
export SLURM_CONF=$cluster/slurm.conf
cat > "$SLURM_CONF" << CONF
ClusterName=tsumugi-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/munge
AuthInfo=socket=$cluster/munge/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$cluster/state
SlurmdSpoolDir=$cluster/spool
SlurmctldPidFile=$cluster/slurmctld.pid
SlurmdPidFile=$cluster/slurmd.pid
SlurmctldLogFile=$cluster/log/slurmctld.log
SlurmdLogFile=$cluster/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=4 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
mungekey --create --force --keyfile "$cluster/munge/munge.key" > /dev/null 2>&1 ||
  fail "mungekey could not make a key"
munged --key-file="$cluster/munge/munge.key" --socket="$cluster/munge/munge.socket" --force \
  --pid-file="$cluster/munged.pid" --log-file="$cluster/munge/munged.log" --seed-file="$cluster/munge/seed" ||
  fail "munged did not start"
slurmctld -f "$SLURM_CONF" || fail "slurmctld did not start"
slurmd -f "$SLURM_CONF" || fail "slurmd did not start"
for _ in $(seq 1 60); do
  [ "$(sinfo -h -o %t 2> /dev/null)" = idle ] && break
  sleep 0.5
done
[ "$(sinfo -h -o %t 2> /dev/null)" = idle ] || fail "the node did not come up: $(sinfo 2>&1)"
echo "ok   a one-node SLURM cluster ($host, port $port)"

# Process groups under srun.
timeout 120 srun --mpi=pmix -n 2 "$test_dist" > "$work/srun-dist.log" 2>&1 ||
  { cat "$work/srun-dist.log"; fail "the process-group tests under srun"; }
echo "ok   process-group tests under srun --mpi=pmix -n 2"

# srun and mpirun give the same bits.
common=(--set model.dropout=0 --set train.steps=8 --set train.global_batch=8 --set train.micro_batch=2
  --set parallel.deterministic=true --set checkpoint.every=4)
mpi_train 2 mpirun
timeout 300 srun --mpi=pmix -n 2 "$tsumugi" train "$work/tiny.toml" "${common[@]}" --set checkpoint.dir="$work/srun" \
  > "$work/srun.log" 2>&1 || { cat "$work/srun.log"; fail "srun -n 2 tsumugi train"; }
grep -q "(2 ranks x" "$work/srun.log" || { cat "$work/srun.log"; fail "srun's job did not train on 2 ranks"; }
cmp "$work/mpirun/checkpoints/latest/model.safetensors" "$work/srun/checkpoints/latest/model.safetensors" ||
  fail "srun and mpirun trained different weights"
echo "ok   srun -n 2 tsumugi train: byte-identical weights to mpirun -np 2"

# The example batch script; the time limit's signal; the resubmitted job resumes.
cd "$work"
sbatch_args=(--ntasks-per-node 2 --cpus-per-task 1 --time 30 "$repo/tools/slurm/train.sbatch" "$work/tiny.toml"
  --set model.dropout=0 --set checkpoint.dir="$work/batch" --set checkpoint.every=0)
job=$(TSUMUGI=$tsumugi sbatch --parsable "${sbatch_args[@]}" --set train.steps=100000)
for _ in $(seq 1 240); do
  [ "$(steps_done "$work/batch")" -ge 3 ] && break
  squeue -h -j "$job" 2> /dev/null | grep -q . || break
  sleep 0.25
done
[ "$(steps_done "$work/batch")" -ge 3 ] || { cat "$work/tsumugi-$job.log"; fail "the batch job did not train"; }
scancel --signal=TERM "$job"
for _ in $(seq 1 240); do
  squeue -h -j "$job" 2> /dev/null | grep -q . || break
  sleep 0.25
done
state=$(scontrol show job "$job" | grep -o 'JobState=[A-Z]*')
code=$(scontrol show job "$job" | grep -o ' ExitCode=[0-9:]*' | tr -d ' ')
[ "$state" = JobState=COMPLETED ] && [ "$code" = ExitCode=0:0 ] ||
  { cat "$work/tsumugi-$job.log"; fail "the signalled job ended with $state $code, not COMPLETED 0:0"; }
stopped=$(grep -o 'stopped (signal) at step [0-9]*' "$work/tsumugi-$job.log" | grep -o '[0-9]*$') ||
  { cat "$work/tsumugi-$job.log"; fail "no 'stopped (signal)' line"; }
[ -d "$work/batch/checkpoints/step-$(printf '%08d' "$stopped")" ] || fail "no checkpoint of step $stopped"
echo "ok   sbatch tools/slurm/train.sbatch: SIGTERM at step $stopped saved its checkpoint, job COMPLETED 0:0"
TSUMUGI=$tsumugi timeout 300 sbatch --wait --quiet "${sbatch_args[@]}" --set train.steps=$((stopped + 3)) > /dev/null ||
  { cat "$work"/tsumugi-*.log; fail "the resubmitted job"; }
grep -q "resuming from .*step-$(printf '%08d' "$stopped") (step $stopped)" "$work"/tsumugi-*.log ||
  { cat "$work"/tsumugi-*.log; fail "the resubmitted job did not resume from step $stopped"; }
[ -d "$work/batch/checkpoints/step-$(printf '%08d' $((stopped + 3)))" ] || fail "the resumed job did not finish"
echo "ok   the resubmitted job resumed from step $stopped and finished at step $((stopped + 3))"
