#pragma once
// Internal: prep's outputs (shards, manifest.json, tokenizer.model) are written whole or not at
// all. The bytes go to PATH.tmp with checked write(2), fsync and close (a full disk or a file-size
// limit surfaces here, not later or never as with a buffered stream), then PATH.tmp is renamed
// to PATH. On any failure the temporary is removed and one IOError names PATH and the reason.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>

#include "core/check.h"

namespace tsumugi::data_internal {

inline void write_file_atomically(const std::string& path, std::string_view bytes, const char* tag) {
  const std::string temporary = path + ".tmp";
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  TSU_CHECK(fd >= 0, IOError, "[{}] {}: cannot create {}: {}", tag, path, temporary, std::strerror(errno));
  int error = 0;
  for (size_t done = 0; done < bytes.size() && error == 0;) {
    const ssize_t n = ::write(fd, bytes.data() + done, std::min<size_t>(bytes.size() - done, size_t{1} << 30));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) error = errno;
    if (n == 0) error = ENOSPC;
    if (n > 0) done += static_cast<size_t>(n);
  }
  if (error == 0 && ::fsync(fd) != 0) error = errno;
  if (::close(fd) != 0 && error == 0) error = errno;
  std::error_code ec;
  if (error == 0) {
    std::filesystem::rename(temporary, path, ec);
    if (ec) error = ec.value();
  }
  if (error == 0) {  // the rename itself survives a power cut
    const std::string folder = std::filesystem::path(path).parent_path().string();
    const int dir_fd = ::open(folder.empty() ? "." : folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir_fd >= 0) {
      ::fsync(dir_fd);
      ::close(dir_fd);
    }
  }
  if (error != 0) {
    std::filesystem::remove(temporary, ec);
    TSU_FAIL(IOError, "[{}] {}: cannot write ({} bytes): {}", tag, path, bytes.size(), std::strerror(error));
  }
}

}  // namespace tsumugi::data_internal
