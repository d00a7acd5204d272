#pragma once
// Internal: RAII for HDF5 ids, attributes, and HDF5's error stack turned into one message.
#include <hdf5.h>

#include <cstdint>
#include <mutex>
#include <string>

namespace tsumugi::data_internal {

/// Every HDF5 call in tsumugi holds this lock: HDF5 builds need not be thread-safe.
std::mutex& hdf5_mutex();

/// Owns one HDF5 id and closes it with `close` (H5Fclose, H5Dclose, ...).
class H5Handle {
 public:
  H5Handle() = default;
  H5Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~H5Handle() { reset(); }
  H5Handle(H5Handle&& other) noexcept : id_(other.id_), close_(other.close_) { other.id_ = -1; }
  H5Handle& operator=(H5Handle&& other) noexcept {
    if (this != &other) {
      reset();
      id_ = other.id_;
      close_ = other.close_;
      other.id_ = -1;
    }
    return *this;
  }
  H5Handle(const H5Handle&) = delete;
  H5Handle& operator=(const H5Handle&) = delete;
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void reset() {
    if (id_ >= 0 && close_) close_(id_);
    id_ = -1;
  }

 private:
  hid_t id_ = -1;
  herr_t (*close_)(hid_t) = nullptr;
};

/// Silences HDF5's automatic error printing while alive; message() reads the error stack.
class H5ErrorCapture {
 public:
  H5ErrorCapture();
  ~H5ErrorCapture();
  /// The outermost and innermost messages of HDF5's current error stack, or "" when empty.
  std::string message() const;

 private:
  H5E_auto2_t old_function_ = nullptr;
  void* old_data_ = nullptr;
};

/// Writes a scalar attribute on `object`.
void write_string_attribute(hid_t object, const char* name, const std::string& value);
void write_u64_attribute(hid_t object, const char* name, uint64_t value);
void write_i32_attribute(hid_t object, const char* name, int32_t value);

/// Reads a scalar attribute; returns false when it is missing or of another class.
bool read_string_attribute(hid_t object, const char* name, std::string& value);
bool read_u64_attribute(hid_t object, const char* name, uint64_t& value);
bool read_i64_attribute(hid_t object, const char* name, int64_t& value);

}  // namespace tsumugi::data_internal
