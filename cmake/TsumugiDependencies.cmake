# Every dependency comes from the distribution (Debian 12 package names in tools/setup-debian.sh).
find_package(PkgConfig REQUIRED)
find_package(OpenMP REQUIRED)
find_package(fmt REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
# The OpenMP build of OpenBLAS, so that BLAS and our kernels share one OpenMP thread pool.
pkg_check_modules(OpenBLAS REQUIRED IMPORTED_TARGET openblas)

# CUDA: AUTO turns it on when nvcc and the toolkit are found.
set(TSUMUGI_HAS_CUDA OFF)
if(NOT TSUMUGI_CUDA STREQUAL "OFF")
  if(NOT DEFINED CUDAToolkit_ROOT AND EXISTS /usr/local/cuda)
    set(CUDAToolkit_ROOT /usr/local/cuda)
  endif()
  find_package(CUDAToolkit QUIET)
  if(CUDAToolkit_FOUND)
    set(TSUMUGI_HAS_CUDA ON)
    # nvcc compiles the kernels; g++ stays the host compiler. sm_90 by default (H100/H200).
    if(NOT DEFINED CMAKE_CUDA_COMPILER)
      set(CMAKE_CUDA_COMPILER ${CUDAToolkit_NVCC_EXECUTABLE})
    endif()
    set(CMAKE_CUDA_ARCHITECTURES ${TSUMUGI_CUDA_ARCHITECTURES})
    enable_language(CUDA)
    # CMake 3.25 predates nvcc's C++20 support: tell it the flag.
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    list(APPEND CMAKE_CUDA20_COMPILE_FEATURES cuda_std_20)
    list(APPEND CMAKE_CUDA_COMPILE_FEATURES cuda_std_20)
    set(CMAKE_CUDA_STANDARD 20)
    # cuDNN (graph API, for fused attention) ships beside the toolkit on our machines.
    find_library(TSUMUGI_CUDNN_LIBRARY cudnn HINTS ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_ROOT}/lib64)
    find_path(TSUMUGI_CUDNN_INCLUDE cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS} ${CUDAToolkit_ROOT}/include)
  elseif(TSUMUGI_CUDA STREQUAL "ON")
    message(FATAL_ERROR "TSUMUGI_CUDA=ON but the CUDA toolkit was not found (set CUDAToolkit_ROOT)")
  endif()
endif()
message(STATUS "tsumugi: CUDA ${TSUMUGI_HAS_CUDA}")

# NCCL (the GPU process group) ships beside the toolkit on our machines: include/nccl.h and
# lib64/libnccl.so (or lib/). Without it the NCCL group is a stub that throws.
set(TSUMUGI_HAS_NCCL OFF)
if(TSUMUGI_HAS_CUDA AND TSUMUGI_NCCL)
  find_path(TSUMUGI_NCCL_INCLUDE nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} ${CUDAToolkit_ROOT}/include)
  find_library(TSUMUGI_NCCL_LIBRARY nccl
               HINTS ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_ROOT}/lib64 ${CUDAToolkit_ROOT}/lib)
  if(TSUMUGI_NCCL_INCLUDE AND TSUMUGI_NCCL_LIBRARY)
    set(TSUMUGI_HAS_NCCL ON)
  else()
    message(WARNING "tsumugi: TSUMUGI_NCCL is on but nccl.h or libnccl was not found; the NCCL group is not built")
  endif()
endif()
message(STATUS "tsumugi: NCCL ${TSUMUGI_HAS_NCCL}")

# Tokenizer and data pipeline: SentencePiece, HDF5 (C API), zlib and zstd for compressed inputs.
pkg_check_modules(SentencePiece REQUIRED IMPORTED_TARGET sentencepiece)
# HDF5 through pkg-config: FindHDF5 needs the C language enabled, which consumers need not have.
pkg_check_modules(TSUMUGI_HDF5 REQUIRED IMPORTED_TARGET hdf5)
find_package(ZLIB REQUIRED)
pkg_check_modules(ZSTD REQUIRED IMPORTED_TARGET libzstd)
