#pragma once
/// safetensors files: 8 bytes of little-endian header length, a JSON header naming each tensor's
/// dtype, shape and byte range, then the raw little-endian data. Reading checks every length,
/// offset, shape and dtype against the file before use: a malformed file is an IOError naming the
/// file and the problem, never a crash. Nothing in the file selects code to run.
#include <tsumugi/core/nn/module.h>

#include <map>
#include <string>

namespace tsumugi {

/// Free-form string metadata stored under "__metadata__".
using Metadata = std::map<std::string, std::string>;

/// Writes tensors (any dtype, any device, any strides) to `path`; throws IOError on failure.
void save_safetensors(const std::string& path, const StateDict& tensors, const Metadata& metadata = {});
/// Reads every tensor of a safetensors file onto the CPU; throws IOError naming the problem.
StateDict load_safetensors(const std::string& path, Metadata* metadata = nullptr);
/// Parses safetensors bytes held in memory; `name` is used in error messages.
StateDict parse_safetensors(const std::string& bytes, const std::string& name, Metadata* metadata = nullptr);

}  // namespace tsumugi
