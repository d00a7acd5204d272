#pragma once
/// Checkpoints: RUN/checkpoints/step-00000100/ holds model.safetensors (fp32 weights, Hugging
/// Face names), optimizer.safetensors and trainer.json (the trainer's state plus the size and
/// checksum of every file). A checkpoint is written into a temporary directory that is renamed
/// into place; then RUN/checkpoints/latest (a symbolic link) is replaced atomically. A crash at
/// any moment leaves the previous checkpoint intact and `latest` pointing at a complete one.
#include <tsumugi/core/nn/module.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tsumugi {

/// A checkpoint read back from disk.
struct Checkpoint {
  std::string dir;           ///< the step directory
  int64_t step = 0;
  StateDict model;           ///< weights by Hugging Face name
  StateDict optimizer;       ///< optimizer state
  std::string trainer_json;  ///< the trainer's state, as saved
};

class CheckpointManager {
 public:
  /// Checkpoints of the run in `run_dir`; only the newest `keep` are kept.
  CheckpointManager(std::string run_dir, int64_t keep);

  /// Writes the checkpoint of `step` atomically and prunes old ones; returns its directory.
  /// `trainer_json` must be a JSON object. Throws IOError (disk full, ...) leaving earlier
  /// checkpoints and `latest` untouched.
  std::string save(int64_t step, const StateDict& model, const StateDict& optimizer, const std::string& trainer_json);
  /// Directory of the newest complete checkpoint (files present with the recorded sizes), if any.
  std::optional<std::string> latest() const;
  /// Complete checkpoints, oldest first.
  std::vector<std::string> list() const;
  /// Step directories that hold every file of a checkpoint, oldest first, whether or not the
  /// files have their recorded sizes and checksums: what resume and find_checkpoint try in turn,
  /// newest first. A directory that lacks a file is left out.
  std::vector<std::string> candidates() const;
  std::string checkpoints_dir() const { return run_dir_ + "/checkpoints"; }

 private:
  std::string run_dir_;
  int64_t keep_;
};

/// The checkpoint directory that `path` names: `path` itself when it holds a trainer.json, else
/// the newest checkpoint of the run directory `path` whose files verify (sizes and checksums), as
/// resume chooses. Every newer one passed over because its files are damaged adds its problem to
/// `skipped` (when given); one that lacks files is passed over silently. Throws IOError when none
/// verifies.
std::string find_checkpoint(const std::string& path, std::vector<std::string>* skipped = nullptr);
/// Reads a checkpoint directory (or a run directory: find_checkpoint's choice), verifying sizes
/// and checksums; throws IOError naming the file and the check that failed.
Checkpoint load_checkpoint(const std::string& dir);
/// Verifies a checkpoint directory without loading tensors; returns "" or the problem found.
std::string verify_checkpoint(const std::string& dir, bool checksums = true);

}  // namespace tsumugi
