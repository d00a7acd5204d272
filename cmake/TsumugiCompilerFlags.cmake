# Warnings and optimisation flags shared by every tsumugi target.
add_library(tsumugi_flags INTERFACE)
target_compile_options(tsumugi_flags INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>)
if(TSUMUGI_CPU_ARCH)
  # The CPU kernels are plain loops written for the auto-vectoriser; -march decides its width.
  target_compile_options(tsumugi_flags INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-march=${TSUMUGI_CPU_ARCH}>)
endif()
target_compile_options(tsumugi_flags INTERFACE
  $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<CONFIG:Release>>:-O3>)
# Neither flag changes a computed value. Without -fno-trapping-math GCC 12 will not vectorise a
# loop that mixes a float clamp with integer bit tricks (our exp); without -fno-math-errno every
# sqrt carries a branch to set errno, which blocks vectorisation of the optimizer loops.
target_compile_options(tsumugi_flags INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-fno-trapping-math -fno-math-errno>)
if(TSUMUGI_FUZZ)
  # libFuzzer comes with clang (Debian 12: clang-16, libclang-rt-16-dev, libomp-16-dev; clang-14
  # cannot compile the tree). Configure with CC=clang-16 CXX=clang++-16, or run tools/fuzz.sh.
  # The libraries get coverage instrumentation without libFuzzer's main (fuzzer-no-link); only
  # the fuzzers link -fsanitize=fuzzer (tests/fuzz/CMakeLists.txt).
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "TSUMUGI_FUZZ needs clang: configure with CC=clang-16 CXX=clang++-16")
  endif()
  set(TSUMUGI_SANITIZE ON CACHE BOOL "Build with AddressSanitizer and UndefinedBehaviorSanitizer" FORCE)
  target_compile_options(tsumugi_flags INTERFACE -fsanitize=fuzzer-no-link)
endif()
if(TSUMUGI_SANITIZE)
  target_compile_options(tsumugi_flags INTERFACE -fsanitize=address,undefined -fno-omit-frame-pointer
                         -fno-sanitize-recover=undefined)
  target_link_options(tsumugi_flags INTERFACE -fsanitize=address,undefined)
endif()
install(TARGETS tsumugi_flags EXPORT tsumugiTargets)
