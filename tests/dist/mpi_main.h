#pragma once
// main() for GoogleTest programs that mpirun starts: every rank runs every test; MPI is
// initialised before and finalised after. A failure on any rank makes mpirun exit non-zero.
#include <gtest/gtest.h>
#include <tsumugi/dist/process_group.h>

#define TSU_MPI_TEST_MAIN                                                        \
  int main(int argc, char** argv) {                                              \
    ::testing::InitGoogleTest(&argc, argv);                                      \
    const auto world = tsumugi::default_group();                                 \
    if (world->rank() != 0) {                                                    \
      auto& listeners = ::testing::UnitTest::GetInstance()->listeners();         \
      delete listeners.Release(listeners.default_result_printer());              \
    }                                                                            \
    const int result = RUN_ALL_TESTS();                                          \
    tsumugi::shutdown_distributed();                                             \
    return result;                                                               \
  }
