// HDF5 helpers: locked, silenced, with attribute helpers for the shard format.
#include "hdf5_util.h"

#include <vector>

namespace tsumugi::data_internal {

std::mutex& hdf5_mutex() {
  static std::mutex mutex;
  return mutex;
}

H5ErrorCapture::H5ErrorCapture() {
  H5Eget_auto2(H5E_DEFAULT, &old_function_, &old_data_);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  H5Eclear2(H5E_DEFAULT);
}

H5ErrorCapture::~H5ErrorCapture() { H5Eset_auto2(H5E_DEFAULT, old_function_, old_data_); }

std::string H5ErrorCapture::message() const {
  std::vector<std::string> messages;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_DOWNWARD,
      [](unsigned, const H5E_error2_t* error, void* data) -> herr_t {
        if (error->desc) static_cast<std::vector<std::string>*>(data)->push_back(error->desc);
        return 0;
      },
      &messages);
  if (messages.empty()) return {};
  if (messages.size() == 1) return messages.front();
  return messages.front() + ": " + messages.back();
}

namespace {

void write_attribute(hid_t object, const char* name, hid_t type, const void* value) {
  H5Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  H5Handle attribute(H5Acreate2(object, name, type, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (attribute.valid()) H5Awrite(attribute.get(), type, value);
}

H5Handle open_attribute(hid_t object, const char* name) {
  if (H5Aexists(object, name) <= 0) return {};
  return H5Handle(H5Aopen(object, name, H5P_DEFAULT), H5Aclose);
}

}  // namespace

void write_string_attribute(hid_t object, const char* name, const std::string& value) {
  H5Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), value.empty() ? 1 : value.size());
  H5Tset_strpad(type.get(), H5T_STR_NULLPAD);
  write_attribute(object, name, type.get(), value.data());
}

void write_u64_attribute(hid_t object, const char* name, uint64_t value) {
  H5Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  H5Handle attribute(H5Acreate2(object, name, H5T_STD_U64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (attribute.valid()) H5Awrite(attribute.get(), H5T_NATIVE_UINT64, &value);
}

void write_i32_attribute(hid_t object, const char* name, int32_t value) {
  H5Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  H5Handle attribute(H5Acreate2(object, name, H5T_STD_I32LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (attribute.valid()) H5Awrite(attribute.get(), H5T_NATIVE_INT32, &value);
}

bool read_string_attribute(hid_t object, const char* name, std::string& value) {
  H5Handle attribute = open_attribute(object, name);
  if (!attribute.valid()) return false;
  H5Handle type(H5Aget_type(attribute.get()), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_STRING || H5Tis_variable_str(type.get()) > 0) return false;
  const size_t size = H5Tget_size(type.get());
  std::string buffer(size, '\0');
  if (H5Aread(attribute.get(), type.get(), buffer.data()) < 0) return false;
  buffer.resize(buffer.find('\0') == std::string::npos ? size : buffer.find('\0'));
  value = buffer;
  return true;
}

bool read_u64_attribute(hid_t object, const char* name, uint64_t& value) {
  H5Handle attribute = open_attribute(object, name);
  if (!attribute.valid()) return false;
  H5Handle type(H5Aget_type(attribute.get()), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_INTEGER) return false;
  return H5Aread(attribute.get(), H5T_NATIVE_UINT64, &value) >= 0;
}

bool read_i64_attribute(hid_t object, const char* name, int64_t& value) {
  H5Handle attribute = open_attribute(object, name);
  if (!attribute.valid()) return false;
  H5Handle type(H5Aget_type(attribute.get()), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_INTEGER) return false;
  return H5Aread(attribute.get(), H5T_NATIVE_INT64, &value) >= 0;
}

}  // namespace tsumugi::data_internal
