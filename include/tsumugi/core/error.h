#pragma once
/// Errors thrown by tsumugi. The library never exits or aborts; every failure is one of these,
/// with a message that names the op or file and the offending value:
/// `[matmul] inner dimensions differ: (4, 8) x (7, 2)`.
#include <stdexcept>
#include <string>

namespace tsumugi {

/// Base class of every error tsumugi throws.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

/// A shape, dtype, device or argument value that an op cannot accept.
class ValueError : public Error {
 public:
  using Error::Error;
};

/// An index or dimension out of range.
class IndexError : public Error {
 public:
  using Error::Error;
};

/// A file that cannot be read or written, or whose contents are malformed.
class IOError : public Error {
 public:
  using Error::Error;
};

/// A feature that this build or device does not provide (e.g. a CUDA op in a CPU-only build).
class NotImplementedError : public Error {
 public:
  using Error::Error;
};

/// Misuse of autograd: backward on a non-scalar without a gradient, on a tensor that does not
/// require grad, or an in-place change to a tensor that autograd needs.
class AutogradError : public Error {
 public:
  using Error::Error;
};

}  // namespace tsumugi
