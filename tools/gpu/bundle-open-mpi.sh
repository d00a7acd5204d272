#!/usr/bin/env bash
# Gathers this machine's Open MPI launcher into a bundle, so that the GPU check can run
# `mpirun -np 2` on a GPU machine that has no Open MPI (the pipeline stages on one GPU):
#
#   tools/gpu/bundle-open-mpi.sh BUNDLE_DIR
#
#   BUNDLE_DIR/ompi/bin/orterun          mpirun itself
#   BUNDLE_DIR/ompi/lib/openmpi3/        its components (dlopen'ed plugins)
#   BUNDLE_DIR/ompi/share/openmpi/       its help texts (the error messages)
#   BUNDLE_DIR/ompi/etc/                 its MCA parameters file
#   BUNDLE_DIR/ompi/pmix/{lib,share}/    PMIx's components and help texts
#   BUNDLE_DIR/lib/                      the libraries all of those load (libopen-rte, libpmix, ...)
#
# Components for fabrics that a one-node run never uses (UCX, libfabric, PSM, verbs, OpenSHMEM)
# are left out with the libraries they would pull in; the launcher (tools/gpu/run-gpu-check.sh)
# selects shared memory (pml ob1, btl self,vader). Debian's Open MPI is relocated with the
# OPAL_* and PMIX_* directory variables that the launcher sets; nothing is read from /usr or
# /etc (tools/gpu/selftest-open-mpi.sh checks that with strace).
set -euo pipefail
bundle=${1:?usage: bundle-open-mpi.sh BUNDLE_DIR}
command -v ompi_info >/dev/null || { echo "bundle-open-mpi: Open MPI is not installed here" >&2; exit 1; }
source "$(dirname "$0")/closure.sh"
pkglibdir=$(open_mpi_path pkglibdir)
pkgdatadir=$(open_mpi_path pkgdatadir)
sysconfdir=$(open_mpi_path sysconfdir)
orterun=$(readlink -f "$(command -v mpirun)")
libpmix=$(libpmix_path) || { echo "bundle-open-mpi: no libpmix.so.2 here (Open MPI 4 needs PMIx)" >&2; exit 1; }
pmix_root=$(dirname "$(dirname "$libpmix")")  # .../pmix2 (lib/, share/)

out=$bundle/ompi
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib/openmpi3" "$out/share" "$out/etc" "$out/pmix/lib" "$out/pmix/share" "$bundle/lib"

# A component needing one of these is for a fabric, not for one node's shared memory.
fabric='lib(uc[mpst]|psm|psm2|infinipath|psm_infinipath|fabric|efa|ibverbs|rdmacm|mlx[45]|nl-|oshmem)'
needs_fabric() {  # (all of ldd's output read first: grep -q would cut its pipe, which pipefail sees)
  local libraries
  libraries=$(ldd "$1" 2>/dev/null | awk '{print $1}')
  grep -qE "^$fabric" <<<"$libraries"
}
cp "$orterun" "$out/bin/orterun"
copy_closure "$orterun" "$bundle/lib"
kept=0 left=0
for plugin in "$pkglibdir"/*.so; do
  if needs_fabric "$plugin"; then
    left=$((left + 1))
    continue
  fi
  cp "$plugin" "$out/lib/openmpi3/"
  copy_closure "$plugin" "$bundle/lib"
  kept=$((kept + 1))
done
cp -r "$pkgdatadir" "$out/share/openmpi"
cp "$sysconfdir/openmpi-mca-params.conf" "$out/etc/" 2>/dev/null || : >"$out/etc/openmpi-mca-params.conf"
: >"$out/etc/openmpi-default-hostfile"
copy_closure "$libpmix" "$bundle/lib"
if [[ -d $pmix_root/lib/pmix ]]; then
  cp -r "$pmix_root/lib/pmix" "$out/pmix/lib/pmix"
  for plugin in "$out"/pmix/lib/pmix/*.so; do copy_closure "$plugin" "$bundle/lib"; done
fi
[[ -d $pmix_root/share/pmix ]] && cp -r "$pmix_root/share/pmix" "$out/pmix/share/pmix"
strip --strip-unneeded "$out/bin/orterun" "$out"/lib/openmpi3/*.so "$out"/pmix/lib/pmix/*.so 2>/dev/null || true
echo "bundle-open-mpi: $(ompi_info --version | head -1), $kept components ($left for fabrics left out)," \
  "$(du -sh "$out" | cut -f1) in $out"
