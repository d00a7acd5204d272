#!/usr/bin/env bash
# Checks, on this CPU machine, the Open MPI that the GPU bundle carries: bundle-open-mpi.sh
# gathers it into a scratch bundle, mpirun-launcher.sh writes its launcher, and the GPU check's
# pipeline test (tests/train/cli/gpu_ranks_test.sh, on the CPU) runs through that launcher
# under strace. It must pass, and no process may open a file of this machine's own Open MPI or
# PMIx (its components, help texts, configuration, libraries) or start its mpirun: on the GPU
# machine those do not exist.
#   tools/gpu/selftest-open-mpi.sh TSUMUGI_BINARY
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
tsumugi=$(realpath "${1:?usage: selftest-open-mpi.sh TSUMUGI_BINARY}")
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/bundle/lib"
"$here/bundle-open-mpi.sh" "$dir/bundle"
"$here/mpirun-launcher.sh" "$dir/bundle/ompi" "$dir/bundle/lib" "$dir/bundle/lib" "$dir/mpirun"
# As in the bundle (run.sh's tsumugi-run), tsumugi loads its MPI library from the bundle's lib/.
printf '#!/bin/sh\nLD_LIBRARY_PATH="%s" exec "%s" "$@"\n' "$dir/bundle/lib" "$tsumugi" >"$dir/tsumugi"
chmod +x "$dir/tsumugi"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
test_script=$root/tests/train/cli/gpu_ranks_test.sh
if ! strace -o /dev/null true 2>/dev/null; then
  echo "selftest-open-mpi: strace cannot trace here; the pipeline test alone:"
  bash "$test_script" "$dir/tsumugi" "$dir/mpirun" cpu
  exit 77
fi
strace -f -qq -e trace=openat,execve -o "$dir/trace" bash "$test_script" "$dir/tsumugi" "$dir/mpirun" cpu

source "$here/closure.sh"
system_dirs=("$(open_mpi_path pkglibdir)" "$(open_mpi_path pkgdatadir)" "$(open_mpi_path sysconfdir)"
             "$(dirname "$(dirname "$(libpmix_path)")")")
# Files opened (the call succeeded) and programs started, outside the scratch bundle.
grep -E '(openat|execve)\(.*\) = [0-9]+$' "$dir/trace" | grep -oE '"/[^"]*"' | tr -d '"' | sort -u |
  grep -v "^$dir/" >"$dir/used" || true
: >"$dir/bad"
for d in "${system_dirs[@]}"; do grep -F "$d/" "$dir/used" >>"$dir/bad" || true; done
grep -E '/lib(mpi|open-pal|open-rte|pmix|event_core|event_pthreads|hwloc)\.so|/(orterun|orted|mpirun[^/]*)$' \
  "$dir/used" >>"$dir/bad" || true
if [[ -s $dir/bad ]]; then
  echo "selftest-open-mpi: FAIL: the bundled Open MPI used this machine's files:"
  sort -u "$dir/bad"
  exit 1
fi
echo "selftest-open-mpi: the bundled mpirun ran the pipeline test from $dir/bundle alone" \
  "($(grep -c . "$dir/used") other files opened, none of this machine's Open MPI or PMIx)"
