#!/usr/bin/env bash
# Writes an `mpirun` that runs the Open MPI gathered by tools/gpu/bundle-open-mpi.sh from where
# it lies, on a machine without Open MPI:
#
#   mpirun-launcher.sh OMPI_DIR LIB_DIR LD_PATH OUT
#
# OMPI_DIR: the bundle's ompi/ folder; LIB_DIR: the folder holding its libraries (libopen-pal,
# libpmix, ...); LD_PATH: the library path of the launched programs (LIB_DIR first); OUT: the
# launcher to write. The launcher points Open MPI's and PMIx's directories (OPAL_*, PMIX_*) into
# OMPI_DIR, and picks shared memory for one node (pml ob1, btl self,vader; no single-copy
# mechanism, which containers often forbid). The ranks inherit all of it: a one-node mpirun
# starts them itself.
set -euo pipefail
ompi=$(cd "${1:?usage: mpirun-launcher.sh OMPI_DIR LIB_DIR LD_PATH OUT}" && pwd)
lib=$(cd "${2:?}" && pwd)
ld_path=${3:?}
out=${4:?}
cat >"$out" <<EOF
#!/bin/sh
# Written by tools/gpu/mpirun-launcher.sh: the GPU bundle's Open MPI, relocated to $ompi.
export LD_LIBRARY_PATH="$ld_path"
export OPAL_PREFIX="$ompi" OPAL_EXEC_PREFIX="$ompi" OPAL_BINDIR="$ompi/bin" OPAL_LIBDIR="$lib"
export OPAL_PKGLIBDIR="$ompi/lib/openmpi3" OPAL_DATADIR="$ompi/share" OPAL_PKGDATADIR="$ompi/share/openmpi"
export OPAL_SYSCONFDIR="$ompi/etc"
export PMIX_PREFIX="$ompi/pmix" PMIX_EXEC_PREFIX="$ompi/pmix" PMIX_LIBDIR="$lib"
export PMIX_PKGLIBDIR="$ompi/pmix/lib/pmix" PMIX_DATADIR="$ompi/pmix/share" PMIX_PKGDATADIR="$ompi/pmix/share/pmix"
export PMIX_SYSCONFDIR="$ompi/etc"
export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMPI_MCA_orte_default_hostfile="$ompi/etc/openmpi-default-hostfile"
exec "$ompi/bin/orterun" "\$@"
EOF
chmod +x "$out"
