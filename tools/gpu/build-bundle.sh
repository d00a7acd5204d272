#!/usr/bin/env bash
# Builds tsumugi's CUDA binaries on this CPU machine and gathers them into one folder that runs
# on a GPU machine which has the NVIDIA driver and NVIDIA's CUDA libraries but none of the
# Debian packages tsumugi links against (docs/gpu.md):
#
#   tools/gpu/build-bundle.sh [bundle-dir]        (default: gpu-bundle/ at the repository root)
#
#   bundle-dir/run.sh           the GPU check (tools/gpu/run-gpu-check.sh)
#   bundle-dir/summarize.py     its summary table (tools/gpu/summarize.py)
#   bundle-dir/bench_torch.py   the same models in PyTorch (tools/bench_torch.py)
#   bundle-dir/bin/             test_cuda, test_core, tsumugi (stripped)
#   bundle-dir/lib/             every shared library they load except glibc's and NVIDIA's
#   bundle-dir/configs/         the recipes
#   bundle-dir/tests/           gpu_train_test.sh, gpu_ranks_test.sh and their fixture (tests/train/cli/)
#   bundle-dir/ompi/            Open MPI's mpirun, components and help texts (bundle-open-mpi.sh),
#                               run through mpirun-launcher.sh; its libraries are in lib/
#   bundle-dir/BUILD_INFO       commit, compiler, CUDA, cuDNN, cuBLAS and NCCL versions built against
#
# Files over 1 MiB in bin/ and lib/ are stored xz-compressed (name.xz; OpenBLAS shrinks from
# 36 to 4 MiB): the folder must travel to the GPU machine inside a 64 MiB working tree. run.sh
# expands them into a scratch folder before it starts. The script fails when the folder is
# larger than MAX_MIB (60).
#
# Environment: BUILD_DIR (build-gpu), JOBS (2), MAX_MIB (60), CUDA_ARCH (90), CPU_ARCH
# (x86-64-v3: the GPU host's processor is another x86-64 than this one).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
bundle=${1:-gpu-bundle}
build=${BUILD_DIR:-build-gpu}
jobs=${JOBS:-2}
max_mib=${MAX_MIB:-60}
targets=(test_cuda test_core tsumugi)

echo "build-bundle: configuring $build (Release, CUDA sm_${CUDA_ARCH:-90}, -march=${CPU_ARCH:-x86-64-v3})"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTSUMUGI_CUDA=ON \
  -DTSUMUGI_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" -DTSUMUGI_CPU_ARCH="${CPU_ARCH:-x86-64-v3}" \
  -DTSUMUGI_BUILD_EXAMPLES=OFF >"$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
rm -f "$build.configure.log"
grep -q '^TSUMUGI_CUDA:STRING=ON' "$build/CMakeCache.txt" || { echo "build-bundle: CUDA is off in $build" >&2; exit 1; }
echo "build-bundle: building ${targets[*]} with -j$jobs"
cmake --build "$build" -j "$jobs" --target "${targets[@]}"

binary_path() {
  case $1 in
    test_cuda) echo "$build/tests/cuda/test_cuda" ;;
    test_core) echo "$build/tests/core/test_core" ;;
    tsumugi) echo "$build/tools/tsumugi/tsumugi" ;;
  esac
}

source tools/gpu/closure.sh

rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/lib"
for target in "${targets[@]}"; do
  src=$(binary_path "$target")
  cp "$src" "$bundle/bin/$target"
  strip --strip-unneeded "$bundle/bin/$target"
  copy_closure "$src" "$bundle/lib"
done

# Open MPI's launcher, its components and their libraries: the GPU check's pipeline stage runs
# `mpirun -np 2` where no Open MPI is installed.
tools/gpu/bundle-open-mpi.sh "$bundle"
cp tools/gpu/mpirun-launcher.sh "$bundle/mpirun-launcher.sh"

cp tools/gpu/run-gpu-check.sh "$bundle/run.sh"
cp tools/gpu/summarize.py "$bundle/summarize.py"
cp tools/bench_torch.py "$bundle/bench_torch.py"
chmod +x "$bundle/run.sh"
cp -r configs "$bundle/configs"
mkdir -p "$bundle/tests"
cp tests/train/cli/gpu_train_test.sh tests/train/cli/gpu_ranks_test.sh tests/train/cli/fixture.sh "$bundle/tests/"

version_of() {  # version_of header MAJOR MINOR PATCH: "9.19.0"
  local h=/usr/local/cuda/include/$1
  [[ -f $h ]] || { echo unknown; return; }
  local v=()
  for key in "$2" "$3" "$4"; do v+=("$(awk -v k="$key" '$1 == "#define" && $2 == k {print $3}' "$h")"); done
  (IFS=.; echo "${v[*]}")
}
nvcc_version=$(sed -n 's/^set(CMAKE_CUDA_COMPILER_VERSION "\(.*\)")$/\1/p' "$build"/CMakeFiles/*/CMakeCUDACompiler.cmake |
  head -1 || true)
{
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m), $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "compiler: $(c++ --version | head -1)"
  echo "nvcc: ${nvcc_version:-unknown}"
  echo "cuda_arch: sm_${CUDA_ARCH:-90}"
  echo "cpu_arch: ${CPU_ARCH:-x86-64-v3}"
  echo "cudnn: $(version_of cudnn_version.h CUDNN_MAJOR CUDNN_MINOR CUDNN_PATCHLEVEL)"
  echo "cublas: $(version_of cublas_api.h CUBLAS_VER_MAJOR CUBLAS_VER_MINOR CUBLAS_VER_PATCH)"
  echo "nccl: $(version_of nccl.h NCCL_MAJOR NCCL_MINOR NCCL_PATCH)"
  echo "glibc: $(ldd --version | head -1 | awk '{print $NF}') (the GPU machine needs this or newer)"
  echo "bundled libraries: $(cd "$bundle/lib" && ls | tr '\n' ' ')"
} >"$bundle/BUILD_INFO"

raw=$(du -sb "$bundle" | cut -f1)
find "$bundle/bin" "$bundle/lib" -type f -size +1M -print0 | xargs -0 -r xz -T"$jobs" -6
bytes=$(du -sb "$bundle" | cut -f1)
mib=$(awk -v b="$bytes" 'BEGIN {printf "%.1f", b / 1048576}')
echo "build-bundle: $(ls "$bundle/lib" | wc -l) libraries, $(ls "$bundle/bin" | wc -l) binaries"
echo "build-bundle: $root/$bundle is $mib MiB ($(awk -v b="$raw" 'BEGIN {printf "%.1f", b / 1048576}') MiB expanded)"
if ((bytes > max_mib * 1048576)); then
  echo "build-bundle: larger than $max_mib MiB" >&2
  exit 1
fi
