#!/usr/bin/env bash
# Installs the Debian 12 packages tsumugi builds and runs with. Safe to re-run: it installs only
# what is missing. The CUDA toolkit is not a Debian package; when /usr/local/cuda exists the
# build uses it (TSUMUGI_CUDA=AUTO). clang-16 with its runtimes (libFuzzer, sanitizers), OpenMP
# and symbolizer builds the fuzzers and the sanitizer tests (tools/fuzz.sh). SLURM and munge run
# the srun/sbatch test on a one-node cluster of its own (tests/dist/slurm_test.sh). strace checks
# that the GPU bundle's Open MPI needs nothing of this machine's (tools/gpu/selftest-open-mpi.sh).
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libopenblas-openmp-dev libopenmpi-dev openmpi-bin libhdf5-dev hdf5-tools
  libfmt-dev libcli11-dev libgtest-dev libgmock-dev
  libsentencepiece-dev sentencepiece libtomlplusplus-dev nlohmann-json3-dev
  libzstd-dev zlib1g-dev python3 python3-numpy
  groff-base mecab-ipadic
  clang-16 libclang-rt-16-dev libomp-16-dev llvm-16
  slurmd slurmctld slurm-client munge
  strace xz-utils
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "setup: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
