# Sourced by build-bundle.sh and bundle-open-mpi.sh: what a binary loads, and which of it goes
# into a bundle that runs on a GPU machine without this machine's Debian packages.

# NVIDIA's libraries come from the GPU machine (its driver and its CUDA wheels), never from here:
# ours would not match its driver, and the stub libcuda here is not a driver at all.
is_nvidia() {
  [[ $1 =~ ^lib(cuda|cudart|cublas|cublasLt|cudnn.*|nccl|nvrtc.*|nvJitLink|nvidia-.*|cufft.*|curand|cusparse.*|cusolver.*|cupti|nvToolsExt|nvtx.*)\.so ]]
}
# glibc's own libraries (libc, libm, libpthread, libdl, librt, ld-linux, ...): the GPU machine's
# glibc must be used with its own loader. Found by the package that owns the file.
is_glibc() {
  [[ $1 =~ ^(ld-linux.*|libc|libm|libpthread|libdl|librt|libresolv|libutil|libanl|libmvec)\.so ]] && return 0
  local owner
  owner=$( (dpkg -S "$2" || dpkg -S "$(realpath "$2")") 2>/dev/null | head -1 | cut -d: -f1 || true)
  [[ $owner == libc6 ]]
}

# copy_closure FILE LIB_DIR: every library FILE loads (ldd lists the whole closure, libraries of
# libraries too, resolved as the loader would), except NVIDIA's and glibc's, copied into LIB_DIR
# and stripped. Each library is decided once per LIB_DIR, also across calls; what LIB_DIR held
# before the first call (also as name.xz) counts as copied. Fails when FILE needs a library that
# is not found here.
declare -A closure_seen=()  # "LIB_DIR/name" -> copied | glibc
copy_closure() {
  local file=$1 lib=$2 name arrow path _ f
  if [[ -z ${closure_seen[$lib/]:-} ]]; then
    for f in "$lib"/*; do [[ -e $f ]] && closure_seen[$lib/$(basename "${f%.xz}")]=copied; done
    closure_seen[$lib/]=1
  fi
  while read -r name arrow path _; do
    [[ $arrow == "=>" ]] || continue
    is_nvidia "$name" && continue
    if [[ $path == "not" ]]; then
      echo "$(basename "$0"): $file needs $name, which is not found here" >&2
      return 1
    fi
    [[ -n ${closure_seen[$lib/$name]:-} ]] && continue
    if is_glibc "$name" "$path"; then
      closure_seen[$lib/$name]=glibc
      continue
    fi
    cp -L "$path" "$lib/$name"
    chmod u+w "$lib/$name"
    strip --strip-unneeded "$lib/$name" 2>/dev/null || true
    closure_seen[$lib/$name]=copied
  done < <(ldd "$file")
}

# This machine's Open MPI directory NAME (pkglibdir, pkgdatadir, sysconfdir, ...).
open_mpi_path() { ompi_info --path "$1" --parsable | cut -d: -f3-; }
# This machine's libpmix.so.2, links resolved ("" when there is none).
libpmix_path() {
  local path
  path=$(ldconfig -p | awk '/libpmix\.so\.2 / && !found {print $NF; found = 1}')
  [[ -n $path ]] && readlink -f "$path"
}
