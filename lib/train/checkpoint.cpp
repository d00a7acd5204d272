// Atomic checkpoints: write into step-N.tmp-PID, fsync, rename to step-N, fsync the parent,
// then point `latest` at it through a rename of a fresh symbolic link.
#include <tsumugi/core/safetensors.h>
#include <tsumugi/train/checkpoint.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/check.h"
#include "core/io/json_integer.h"

namespace tsumugi {
namespace fs = std::filesystem;
namespace {

constexpr const char* kFormat = "tsumugi-checkpoint";
constexpr int kVersion = 1;
const char* const kTensorFiles[] = {"model.safetensors", "optimizer.safetensors"};

std::string step_name(int64_t step) { return fmt::format("step-{:08d}", step); }

// A fast 64-bit checksum of a file (FNV-1a over 8-byte words); detects truncation and flips.
std::string file_checksum(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TSU_CHECK(in.good(), IOError, "[checkpoint] cannot read {}", path);
  uint64_t h = 0xcbf29ce484222325ull;
  std::vector<char> buffer(size_t{1} << 20);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const size_t n = static_cast<size_t>(in.gcount());
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t word;
      std::memcpy(&word, buffer.data() + i, 8);
      h = (h ^ word) * 0x100000001b3ull;
      h ^= h >> 29;
    }
    for (; i < n; ++i) h = (h ^ static_cast<unsigned char>(buffer[i])) * 0x100000001b3ull;
  }
  return fmt::format("{:016x}", h);
}

void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

void write_file(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  TSU_CHECK(fd >= 0, IOError, "[checkpoint] cannot create {}: {}", path, std::strerror(errno));
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int error = errno;
      ::close(fd);
      TSU_FAIL(IOError, "[checkpoint] writing {} failed: {}", path, std::strerror(error));
    }
    done += static_cast<size_t>(n);
  }
  const bool synced = ::fsync(fd) == 0;
  TSU_CHECK(::close(fd) == 0 && synced, IOError, "[checkpoint] writing {} failed: {}", path, std::strerror(errno));
}

nlohmann::json read_trainer_json(const std::string& dir) {
  const std::string path = dir + "/trainer.json";
  std::ifstream in(path);
  TSU_CHECK(in.good(), IOError, "[checkpoint] {} is missing", path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    TSU_FAIL(IOError, "[checkpoint] {} is not valid JSON (truncated?): {}", path, e.what());
  }
  const auto checkpoint = j.is_object() ? j.find("checkpoint") : j.end();
  TSU_CHECK(checkpoint != j.end() && checkpoint->is_object() && checkpoint->contains("format") &&
                checkpoint->at("format") == kFormat,
            IOError, "[checkpoint] {} is not a tsumugi checkpoint description", path);
  return j;
}

// A checkpoint directory's own name: "step-" and digits, nothing that leads elsewhere.
bool is_step_name(const std::string& name) {
  return name.size() > 5 && name.starts_with("step-") &&
         name.find_first_not_of("0123456789", 5) == std::string::npos;
}

}  // namespace

CheckpointManager::CheckpointManager(std::string run_dir, int64_t keep) : run_dir_(std::move(run_dir)), keep_(keep) {
  TSU_CHECK(keep_ >= 1, ValueError, "[checkpoint] keep must be at least 1");
}

std::string CheckpointManager::save(int64_t step, const StateDict& model, const StateDict& optimizer,
                                    const std::string& trainer_json) {
  const std::string root = checkpoints_dir();
  std::error_code ec;
  fs::create_directories(root, ec);
  TSU_CHECK(!ec, IOError, "[checkpoint] cannot create {}: {}", root, ec.message());
  const std::string final_dir = root + "/" + step_name(step);
  const std::string tmp_dir = fmt::format("{}.tmp-{}", final_dir, ::getpid());
  fs::remove_all(tmp_dir, ec);
  fs::create_directory(tmp_dir, ec);
  TSU_CHECK(!ec, IOError, "[checkpoint] cannot create {}: {}", tmp_dir, ec.message());
  try {
    nlohmann::json state = nlohmann::json::parse(trainer_json);
    TSU_CHECK(state.is_object(), ValueError, "[checkpoint] trainer state must be a JSON object");
    save_safetensors(tmp_dir + "/model.safetensors", model, {{"format", "pt"}});
    save_safetensors(tmp_dir + "/optimizer.safetensors", optimizer);
    nlohmann::json files = nlohmann::json::object();
    for (const char* name : kTensorFiles) {
      const std::string path = tmp_dir + "/" + name;
      files[name] = {{"bytes", fs::file_size(path)}, {"checksum", file_checksum(path)}};
    }
    state["checkpoint"] = {{"format", kFormat}, {"version", kVersion}, {"step", step}, {"files", files}};
    write_file(tmp_dir + "/trainer.json", state.dump(2) + "\n");  // written last: marks completeness
    fsync_path(tmp_dir, true);
  } catch (...) {
    fs::remove_all(tmp_dir, ec);
    throw;
  }
  // Replace an existing checkpoint of the same step (a resumed run saving it again) only after the
  // new one is complete.
  const std::string old_dir = final_dir + ".old";
  if (fs::exists(final_dir)) fs::rename(final_dir, old_dir, ec);
  fs::rename(tmp_dir, final_dir, ec);
  TSU_CHECK(!ec, IOError, "[checkpoint] cannot rename {} to {}: {}", tmp_dir, final_dir, ec.message());
  fs::remove_all(old_dir, ec);
  fsync_path(root, true);

  const std::string link_tmp = fmt::format("{}/latest.tmp-{}", root, ::getpid());
  fs::remove(link_tmp, ec);
  fs::create_directory_symlink(step_name(step), link_tmp, ec);
  TSU_CHECK(!ec, IOError, "[checkpoint] cannot create {}: {}", link_tmp, ec.message());
  fs::rename(link_tmp, root + "/latest", ec);  // atomic replacement of the link
  TSU_CHECK(!ec, IOError, "[checkpoint] cannot update {}/latest: {}", root, ec.message());
  fsync_path(root, true);

  // Keep the newest `keep` complete checkpoints; never the one just written. A checkpoint is first
  // renamed out of the step-N names, so a kill while its files go leaves no half checkpoint
  // under a step name; what such kills (or kills during a write) left is swept here.
  std::vector<std::string> complete = list();
  for (size_t i = 0; i + static_cast<size_t>(keep_) < complete.size(); ++i) {
    if (complete[i] == final_dir) continue;
    const std::string doomed = complete[i] + ".pruned";
    fs::rename(complete[i], doomed, ec);
    fs::remove_all(ec ? complete[i] : doomed, ec);
  }
  std::vector<std::string> leftovers;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string name = entry.path().filename().string();
    const bool leftover = name.starts_with("step-") && (name.find(".tmp-") != std::string::npos ||
                                                        name.ends_with(".pruned") || name.ends_with(".old"));
    if (leftover && !entry.is_symlink(ec)) leftovers.push_back(entry.path().string());
  }
  for (const std::string& path : leftovers) fs::remove_all(path, ec);
  return final_dir;
}

namespace {

// The step-<digits> directories of `root` (no links) that `keep` accepts, oldest first.
template <class Keep>
std::vector<std::string> step_dirs(const std::string& root, Keep&& keep) {
  std::vector<std::string> dirs;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return dirs;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_symlink() || !entry.is_directory() || !is_step_name(name)) continue;
    if (keep(entry.path())) dirs.push_back(entry.path().string());
  }
  std::sort(dirs.begin(), dirs.end());  // zero-padded step numbers sort in order
  return dirs;
}

}  // namespace

std::vector<std::string> CheckpointManager::list() const {
  return step_dirs(checkpoints_dir(),
                   [](const fs::path& dir) { return verify_checkpoint(dir.string(), /*checksums=*/false).empty(); });
}

std::vector<std::string> CheckpointManager::candidates() const {
  return step_dirs(checkpoints_dir(), [](const fs::path& dir) {
    std::error_code ec;
    bool present = fs::is_regular_file(dir / "trainer.json", ec);
    for (const char* file : kTensorFiles) present = present && fs::is_regular_file(dir / file, ec);
    return present;
  });
}

std::optional<std::string> CheckpointManager::latest() const {
  const std::string link = checkpoints_dir() + "/latest";
  std::error_code ec;
  if (fs::is_symlink(link, ec)) {
    // Followed only to a sibling step directory: a link elsewhere (written by someone else) is
    // ignored like a stale one.
    const std::string name = fs::read_symlink(link, ec).string();
    const std::string target = checkpoints_dir() + "/" + name;
    if (!ec && is_step_name(name) && verify_checkpoint(target, false).empty()) return target;
  }
  const std::vector<std::string> all = list();  // a missing or stale link: the newest complete one
  if (all.empty()) return std::nullopt;
  return all.back();
}

std::string verify_checkpoint(const std::string& dir, bool checksums) {
  try {
    const nlohmann::json state = read_trainer_json(dir);
    const nlohmann::json& description = state.at("checkpoint");
    if (!description.contains("files") || !description.at("files").is_object())
      return fmt::format("{}/trainer.json does not list the checkpoint's files", dir);
    const nlohmann::json& files = description.at("files");
    for (const char* name : kTensorFiles) {
      // Only the fixed file names are read: nothing in trainer.json names a path.
      const std::string path = dir + "/" + name;
      if (!files.contains(name)) return fmt::format("{}/trainer.json does not describe {}", dir, name);
      const nlohmann::json& entry = files.at(name);
      const uint64_t bytes =
          json_integer<uint64_t>(entry.at("bytes"), fmt::format("{}/trainer.json: the size of {}", dir, name));
      std::error_code ec;
      const auto size = fs::file_size(path, ec);
      if (ec) return fmt::format("{} is missing", path);
      if (size != bytes) return fmt::format("{} has {} bytes, expected {} (truncated?)", path, size, bytes);
      if (checksums && file_checksum(path) != entry.at("checksum").get<std::string>())
        return fmt::format("{} fails its checksum (corrupted)", path);
    }
  } catch (const Error& e) {
    // The problem alone: callers put it into a message of their own ("[checkpoint] ...").
    const std::string what = e.what(), prefix = "[checkpoint] ";
    return what.starts_with(prefix) ? what.substr(prefix.size()) : what;
  } catch (const nlohmann::json::exception& e) {
    return fmt::format("{}/trainer.json is malformed: {}", dir, e.what());
  }
  return "";
}

std::string find_checkpoint(const std::string& path, std::vector<std::string>* skipped) {
  if (fs::exists(path + "/trainer.json")) return path;
  // Newest first, as resume goes: `latest` names the newest unless a crash came between a
  // checkpoint's rename and the link's update, and then the newer one is complete.
  const std::vector<std::string> all = CheckpointManager(path, 1).candidates();
  std::vector<std::string> problems;
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    const std::string& dir = *it;
    std::string problem = verify_checkpoint(dir);
    if (problem.empty()) {
      if (skipped) skipped->insert(skipped->end(), problems.begin(), problems.end());
      return dir;
    }
    problems.push_back(std::move(problem));
  }
  TSU_CHECK(problems.empty(), IOError, "[checkpoint] {} holds no checkpoint that verifies; the newest: {}", path,
            problems.front());
  TSU_FAIL(IOError, "[checkpoint] {} holds no complete checkpoint", path);
}

Checkpoint load_checkpoint(const std::string& path) {
  const bool run_dir = !fs::exists(path + "/trainer.json");
  const std::string dir = find_checkpoint(path);
  if (!run_dir) {  // find_checkpoint verified a run directory's choice
    const std::string problem = verify_checkpoint(dir);
    TSU_CHECK(problem.empty(), IOError, "[checkpoint] {}", problem);
  }
  Checkpoint c;
  c.dir = dir;
  const nlohmann::json state = read_trainer_json(dir);
  try {
    c.step = json_integer<int64_t>(state.at("checkpoint").at("step"), dir + "/trainer.json: step");
  } catch (const nlohmann::json::exception& e) {
    TSU_FAIL(IOError, "[checkpoint] {}/trainer.json has no step: {}", dir, e.what());
  }
  TSU_CHECK(c.step >= 0, IOError, "[checkpoint] {}/trainer.json: step {} is negative", dir, c.step);
  c.trainer_json = state.dump();
  c.model = load_safetensors(dir + "/model.safetensors");
  c.optimizer = load_safetensors(dir + "/optimizer.safetensors");
  return c;
}

}  // namespace tsumugi
