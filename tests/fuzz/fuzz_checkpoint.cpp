// Fuzzes a checkpoint's trainer.json: verification, load_checkpoint and load_trained_model (the
// recipe inside, the tokenizer it names, the model it describes against the weights). The input
// replaces trainer.json of a real checkpoint (write_checkpoint_fixture). An input that starts with
// '@' names, on its first line, the target of the run's `latest` link instead; the rest is
// trainer.json, and the run folder is loaded through that link.
#include <tsumugi/train/checkpoint.h>
#include <tsumugi/train/trainer.h>

#include <unistd.h>

#include <algorithm>

#include "fuzz/fuzz_util.h"

namespace {

const std::string kRun = "run";
const std::string kStep = "run/checkpoints/step-00000007";

void set_up() {
  static const bool done = [] {
    const auto& root = tsumugi::fuzz::scratch_dir();
    tsumugi::fuzz::write_checkpoint_fixture(root);
    // Relative paths in the fuzzed recipe resolve against the scratch folder.
    if (::chdir(root.c_str()) != 0) std::abort();
    return true;
  }();
  (void)done;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tsumugi;
  set_up();
  std::string_view input = fuzz::as_text(data, size);
  std::string link_target = "step-00000007";
  if (!input.empty() && input.front() == '@') {
    const size_t end = std::min(input.find('\n'), input.size());
    link_target = std::string(input.substr(1, end - 1));
    input.remove_prefix(std::min(end + 1, input.size()));
  }
  fuzz::write_file(kStep + "/trainer.json", input);
  std::error_code ignored;
  std::filesystem::remove(kRun + "/checkpoints/latest", ignored);
  std::filesystem::create_directory_symlink(link_target, kRun + "/checkpoints/latest", ignored);

  // load_trained_model verifies and loads the checkpoint (verify_checkpoint, load_checkpoint)
  // before it reads the recipe; the run folder goes through `latest` and the listing.
  fuzz::expect_only_tsumugi_errors([&] { (void)load_trained_model(kStep); });
  if (link_target != "step-00000007") fuzz::expect_only_tsumugi_errors([&] { (void)load_checkpoint(kRun); });
  return 0;
}
