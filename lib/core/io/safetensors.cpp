// safetensors reading and writing (https://github.com/huggingface/safetensors, format section).
#include <tsumugi/core/safetensors.h>

#include <algorithm>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <vector>

#include "../check.h"

namespace tsumugi {
namespace {

constexpr uint64_t kMaxHeader = 100u << 20;  // as the reference implementation: 100 MB

struct DTypeName {
  DType dtype;
  const char* name;
};
constexpr DTypeName kDTypes[] = {{DType::f32, "F32"}, {DType::f64, "F64"}, {DType::bf16, "BF16"},
                                 {DType::f16, "F16"}, {DType::i32, "I32"}, {DType::i64, "I64"},
                                 {DType::u16, "U16"}, {DType::u32, "U32"}, {DType::u8, "U8"},
                                 {DType::boolean, "BOOL"}};

const char* safetensors_dtype(DType dtype) {
  for (const auto& d : kDTypes)
    if (d.dtype == dtype) return d.name;
  return "?";
}

bool parse_dtype_name(const std::string& name, DType& out) {
  for (const auto& d : kDTypes)
    if (name == d.name) {
      out = d.dtype;
      return true;
    }
  return false;
}

}  // namespace

void save_safetensors(const std::string& path, const StateDict& tensors, const Metadata& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<Tensor> contiguous;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    TSU_CHECK(name != "__metadata__", IOError, "[safetensors] {}: '__metadata__' is not a valid tensor name", path);
    Tensor t = tensor.detach().to(Device::cpu()).contiguous();
    const uint64_t bytes = t.nbytes();
    header[name] = {{"dtype", safetensors_dtype(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    contiguous.push_back(t);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keep the data 8-byte aligned
  // POSIX writes, each checked, then fsync: a full disk is an error here, not a short file later.
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  TSU_CHECK(fd >= 0, IOError, "[safetensors] cannot open {} for writing: {}", path, std::strerror(errno));
  auto write_all = [&](const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t written = ::write(fd, p, std::min<size_t>(n, size_t{1} << 30));
      if (written < 0 && errno == EINTR) continue;
      if (written <= 0) {
        const int error = errno;
        ::close(fd);
        TSU_FAIL(IOError, "[safetensors] writing {} failed: {}", path, std::strerror(error));
      }
      p += written;
      n -= static_cast<size_t>(written);
    }
  };
  const uint64_t length = text.size();
  write_all(&length, 8);  // little-endian on every supported host
  write_all(text.data(), text.size());
  for (const Tensor& t : contiguous)
    if (t.nbytes() > 0) write_all(t.data_ptr(), t.nbytes());
  const bool synced = ::fsync(fd) == 0;
  const int sync_error = errno;
  TSU_CHECK(::close(fd) == 0 && synced, IOError, "[safetensors] writing {} failed: {}", path,
            std::strerror(synced ? errno : sync_error));
}

StateDict parse_safetensors(const std::string& bytes, const std::string& name, Metadata* metadata) {
  TSU_CHECK(bytes.size() >= 8, IOError, "[safetensors] {}: file of {} bytes is too short for a header", name,
            bytes.size());
  uint64_t length = 0;
  std::memcpy(&length, bytes.data(), 8);
  TSU_CHECK(length <= kMaxHeader && length <= bytes.size() - 8, IOError,
            "[safetensors] {}: header length {} exceeds the file ({} bytes)", name, length, bytes.size());
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(length));
  } catch (const nlohmann::json::exception& e) {
    TSU_FAIL(IOError, "[safetensors] {}: header is not valid JSON: {}", name, e.what());
  }
  TSU_CHECK(header.is_object(), IOError, "[safetensors] {}: header is not a JSON object", name);
  const uint64_t data_size = bytes.size() - 8 - length;
  const char* data = bytes.data() + 8 + length;

  struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& key = it.key();
    const nlohmann::json& value = it.value();
    if (key == "__metadata__") {
      TSU_CHECK(value.is_object(), IOError, "[safetensors] {}: __metadata__ is not an object", name);
      for (auto m = value.begin(); m != value.end(); ++m) {
        TSU_CHECK(m.value().is_string(), IOError, "[safetensors] {}: metadata '{}' is not a string", name, m.key());
        if (metadata) (*metadata)[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    TSU_CHECK(value.is_object() && value.contains("dtype") && value.contains("shape") && value.contains("data_offsets"),
              IOError, "[safetensors] {}: entry '{}' lacks dtype, shape or data_offsets", name, key);
    const auto& dtype = value["dtype"];
    const auto& shape = value["shape"];
    const auto& offsets = value["data_offsets"];
    Entry e{key, DType::f32, {}, 0, 0};
    TSU_CHECK(dtype.is_string() && parse_dtype_name(dtype.get<std::string>(), e.dtype), IOError,
              "[safetensors] {}: tensor '{}' has unsupported dtype {}", name, key, dtype.dump());
    TSU_CHECK(shape.is_array() && shape.size() <= 16, IOError, "[safetensors] {}: tensor '{}' has an invalid shape",
              name, key);
    uint64_t numel = 1;
    for (const auto& s : shape) {
      TSU_CHECK(s.is_number_unsigned() && s.get<uint64_t>() <= (uint64_t{1} << 40), IOError,
                "[safetensors] {}: tensor '{}' has an invalid shape {}", name, key, shape.dump());
      const uint64_t size = s.get<uint64_t>();
      TSU_CHECK(size == 0 || numel <= std::numeric_limits<uint64_t>::max() / 16 / size, IOError,
                "[safetensors] {}: tensor '{}' shape {} overflows", name, key, shape.dump());
      numel *= size;
      e.shape.push_back(static_cast<int64_t>(size));
    }
    TSU_CHECK(offsets.is_array() && offsets.size() == 2 && offsets[0].is_number_unsigned() &&
                  offsets[1].is_number_unsigned(),
              IOError, "[safetensors] {}: tensor '{}' has invalid data_offsets", name, key);
    e.begin = offsets[0].get<uint64_t>();
    e.end = offsets[1].get<uint64_t>();
    TSU_CHECK(e.begin <= e.end && e.end <= data_size, IOError,
              "[safetensors] {}: tensor '{}' bytes [{}, {}) lie outside the {} data bytes (truncated file?)", name, key,
              e.begin, e.end, data_size);
    TSU_CHECK(e.end - e.begin == numel * dtype_size(e.dtype), IOError,
              "[safetensors] {}: tensor '{}' has {} bytes but shape {} of {} needs {}", name, key, e.end - e.begin,
              shape.dump(), dtype.get<std::string>(), numel * dtype_size(e.dtype));
    entries.push_back(std::move(e));
  }
  // The byte ranges must tile the data region exactly: no overlaps, no holes.
  std::vector<const Entry*> order;
  for (const Entry& e : entries) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t expected = 0;
  for (const Entry* e : order) {
    TSU_CHECK(e->begin == expected, IOError, "[safetensors] {}: tensor '{}' starts at byte {}, expected {} (overlap or gap)",
              name, e->name, e->begin, expected);
    expected = e->end;
  }
  TSU_CHECK(expected == data_size, IOError, "[safetensors] {}: {} trailing bytes after the last tensor", name,
            data_size - expected);

  // A bool is one byte, 0 or 1: any other byte would be an invalid bool in every kernel.
  for (const Entry& e : entries) {
    if (e.dtype != DType::boolean) continue;
    const char* bad = std::find_if(data + e.begin, data + e.end, [](char b) { return b != 0 && b != 1; });
    TSU_CHECK(bad == data + e.end, IOError, "[safetensors] {}: tensor '{}' of BOOL holds byte {} at element {} (not 0 or 1)",
              name, e.name, static_cast<int>(static_cast<unsigned char>(*bad)), bad - (data + e.begin));
  }
  StateDict out;
  for (const Entry& e : entries) {
    Tensor t = empty(e.shape, {.dtype = e.dtype});
    if (e.end > e.begin) std::memcpy(t.data_ptr(), data + e.begin, e.end - e.begin);
    out.emplace(e.name, t);
  }
  return out;
}

StateDict load_safetensors(const std::string& path, Metadata* metadata) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  TSU_CHECK(in.good(), IOError, "[safetensors] cannot open {}: {}", path, std::strerror(errno));
  const std::streamoff size = in.tellg();
  TSU_CHECK(size >= 0, IOError, "[safetensors] cannot read {}", path);
  std::string bytes(static_cast<size_t>(size), '\0');
  in.seekg(0);
  in.read(bytes.data(), size);
  TSU_CHECK(in.good() || in.eof(), IOError, "[safetensors] reading {} failed", path);
  return parse_safetensors(bytes, path, metadata);
}

}  // namespace tsumugi
