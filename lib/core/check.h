#pragma once
// Internal: argument checks in the style of TORCH_CHECK, with fmt messages.
// TSU_CHECK(cond, ErrorType, "[op] message {}", value) throws ErrorType(formatted message).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <tsumugi/core/error.h>

#define TSU_CHECK(cond, ErrorType, ...)                    \
  do {                                                     \
    if (!(cond)) throw ErrorType(fmt::format(__VA_ARGS__)); \
  } while (0)

#define TSU_FAIL(ErrorType, ...) throw ErrorType(fmt::format(__VA_ARGS__))
