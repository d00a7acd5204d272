#include <gtest/gtest.h>
#include <tsumugi/tsumugi.h>
#include <tsumugi/train/checkpoint.h>

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

using namespace tsumugi;
namespace fs = std::filesystem;

namespace {

std::string fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("tsumugi_checkpoint_test_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

StateDict weights(float value, int64_t n = 1000) { return {{"w", full({n}, value)}, {"b", full({3}, value)}}; }

}  // namespace

TEST(Checkpoint, SavesLoadsAndPointsLatestAtTheNewest) {
  const std::string run = fresh_dir("basic");
  CheckpointManager manager(run, 2);
  EXPECT_FALSE(manager.latest().has_value());
  manager.save(10, weights(1), {{"step", from_data<int64_t>({10})}}, R"({"step": 10})");
  const std::string second = manager.save(20, weights(2), {{"step", from_data<int64_t>({20})}}, R"({"step": 20, "note": "x"})");
  EXPECT_EQ(manager.latest().value(), second);
  EXPECT_EQ(fs::read_symlink(run + "/checkpoints/latest").string(), "step-00000020");
  const Checkpoint c = load_checkpoint(run);  // a run directory means its latest checkpoint
  EXPECT_EQ(c.step, 20);
  EXPECT_EQ(c.model.at("w").to_vector<float>()[0], 2.0f);
  EXPECT_NE(c.trainer_json.find("\"note\""), std::string::npos);
}

TEST(Checkpoint, KeepsOnlyTheNewestK) {
  const std::string run = fresh_dir("keep");
  CheckpointManager manager(run, 2);
  for (int step = 1; step <= 4; ++step) manager.save(step, weights(step), {}, "{}");
  const auto all = manager.list();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(fs::path(all[0]).filename(), "step-00000003");
  EXPECT_EQ(fs::path(all[1]).filename(), "step-00000004");
}

TEST(Checkpoint, SavingSweepsWhatKilledWritesAndPrunesLeftBehind) {
  // A kill mid-write leaves step-N.tmp-PID; a kill while an old checkpoint's files were being
  // removed leaves step-N.pruned (pruning renames first, so never a half step-N). The next
  // save removes both and keeps every complete checkpoint and foreign files.
  const std::string run = fresh_dir("sweep");
  CheckpointManager manager(run, 3);
  manager.save(1, weights(1), {}, "{}");
  const std::string root = run + "/checkpoints";
  for (const char* leftover : {"step-00000002.tmp-12345", "step-00000000.pruned", "step-00000001.old"}) {
    fs::create_directories(root + "/" + leftover);
    std::ofstream(root + "/" + leftover + "/model.safetensors") << "partial";
  }
  std::ofstream(root + "/notes.txt") << "mine";
  manager.save(2, weights(2), {}, "{}");
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(root)) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"latest", "notes.txt", "step-00000001", "step-00000002"}));
}

TEST(Checkpoint, DetectsTruncationAndCorruption) {
  const std::string run = fresh_dir("corrupt");
  CheckpointManager manager(run, 3);
  const std::string dir = manager.save(5, weights(1), {}, "{}");
  const std::string model = dir + "/model.safetensors";
  {
    std::fstream f(model, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-5, std::ios::end);
    f.put('\x7f');  // flip one byte of the data
  }
  try {
    load_checkpoint(dir);
    FAIL() << "accepted a corrupted checkpoint";
  } catch (const IOError& e) {
    EXPECT_NE(std::string(e.what()).find("model.safetensors fails its checksum"), std::string::npos) << e.what();
  }
  fs::resize_file(model, fs::file_size(model) - 100);
  EXPECT_NE(verify_checkpoint(dir).find("truncated"), std::string::npos);
  EXPECT_FALSE(manager.latest().has_value());  // the only checkpoint is incomplete now
}

// What eval, generate and export load from a run directory: the newest checkpoint whose files
// verify; damaged newer ones are reported, a step directory lacking a file is not.
TEST(Checkpoint, FindCheckpointTakesTheNewestThatVerifiesAndReportsDamagedOnes) {
  const std::string run = fresh_dir("find");
  CheckpointManager manager(run, 5);
  const std::string first = manager.save(1, weights(1), {}, "{}");
  const std::string second = manager.save(2, weights(2), {}, "{}");
  const std::string third = manager.save(3, weights(3), {}, "{}");
  std::vector<std::string> skipped;
  EXPECT_EQ(find_checkpoint(run, &skipped), third);
  EXPECT_TRUE(skipped.empty());
  fs::resize_file(third + "/model.safetensors", 100);       // truncated
  std::ofstream(second + "/trainer.json") << "{\"cut short";  // not JSON
  EXPECT_EQ(find_checkpoint(run, &skipped), first);
  ASSERT_EQ(skipped.size(), 2u);
  EXPECT_NE(skipped[0].find(third + "/model.safetensors has 100 bytes"), std::string::npos) << skipped[0];
  EXPECT_EQ(skipped[0].find("[checkpoint]"), std::string::npos) << skipped[0];  // the problem alone
  EXPECT_NE(skipped[1].find(second + "/trainer.json is not valid JSON"), std::string::npos) << skipped[1];
  EXPECT_EQ(load_checkpoint(run).step, 1);
  // A step directory that lacks a file (a removal cut short) is passed over without a report.
  const std::string fourth = manager.save(4, weights(4), {}, "{}");
  fs::remove(fourth + "/optimizer.safetensors");
  skipped.clear();
  EXPECT_EQ(find_checkpoint(run, &skipped), first);
  EXPECT_EQ(skipped.size(), 2u);
  // A checkpoint directory is taken as it is; loading it reports its own damage.
  EXPECT_EQ(find_checkpoint(third), third);
  EXPECT_THROW(load_checkpoint(third), IOError);
  fs::resize_file(first + "/model.safetensors", 10);
  try {
    find_checkpoint(run);
    FAIL() << "a run without a good checkpoint gave one";
  } catch (const IOError& e) {
    EXPECT_NE(std::string(e.what()).find("holds no checkpoint that verifies"), std::string::npos) << e.what();
  }
  EXPECT_THROW(find_checkpoint(fresh_dir("find_empty")), IOError);
}

// fuzz_checkpoint: a size of 1.8e163 in trainer.json was converted from a double to uint64
// (undefined behaviour). Sizes and the step must be integers that fit.
TEST(Checkpoint, SizesAndStepsThatAreNotIntegersAreProblemsNotConversions) {
  const std::string run = fresh_dir("float_size");
  const std::string dir = CheckpointManager(run, 1).save(5, weights(1), {}, "{}");
  std::ostringstream read;
  read << std::ifstream(dir + "/trainer.json").rdbuf();
  const std::string original = read.str();
  for (const char* bad : {"1.8e163", "-1", "4.5"}) {
    std::string state = original;
    const size_t at = state.find("\"bytes\":");
    ASSERT_NE(at, std::string::npos);
    const size_t value = at + 8, end = state.find_first_of(",}", value);
    state.replace(value, end - value, bad);
    std::ofstream(dir + "/trainer.json", std::ios::trunc) << state;
    const std::string problem = verify_checkpoint(dir);
    EXPECT_NE(problem.find("not an integer"), std::string::npos) << bad << ": " << problem;
    EXPECT_THROW(load_checkpoint(dir), IOError) << bad;
  }
}

TEST(Checkpoint, LatestIsFollowedOnlyToAStepOfThisRun) {
  const std::string other = fresh_dir("other_run");
  CheckpointManager(other, 1).save(30, weights(3), {}, "{}");
  const std::string run = fresh_dir("link");
  CheckpointManager manager(run, 2);
  const std::string own = manager.save(20, weights(2), {}, "{}");
  // Someone else's run directory put `latest` outside this one: it is ignored like a stale link.
  const std::string link = run + "/checkpoints/latest";
  fs::remove(link);
  fs::create_directory_symlink("../../tsumugi_checkpoint_test_other_run/checkpoints/step-00000030", link);
  ASSERT_TRUE(fs::exists(link + "/trainer.json"));
  EXPECT_EQ(manager.latest().value(), own);
  EXPECT_EQ(load_checkpoint(run).step, 20);
}

TEST(Checkpoint, TrainerJsonWithoutAFileListIsAnErrorNotARead) {
  const std::string run = fresh_dir("no_files");
  const std::string dir = CheckpointManager(run, 1).save(5, weights(1), {}, "{}");
  // Once read out of bounds (fuzz_checkpoint): trainer.json's checkpoint section lacked "files".
  std::ofstream(dir + "/trainer.json") << R"({"checkpoint": {"format": "tsumugi-checkpoint", "step": 5}})";
  EXPECT_NE(verify_checkpoint(dir).find("does not list the checkpoint's files"), std::string::npos) << verify_checkpoint(dir);
  EXPECT_THROW(load_checkpoint(dir), IOError);
  std::ofstream(dir + "/trainer.json") << R"({"checkpoint": {"format": "tsumugi-checkpoint", "files": {"model.safetensors": 3}}})";
  EXPECT_NE(verify_checkpoint(dir).find("malformed"), std::string::npos) << verify_checkpoint(dir);
}

TEST(Checkpoint, AFullDiskLeavesThePreviousCheckpointIntact) {
  const std::string run = fresh_dir("full_disk");
  CheckpointManager manager(run, 3);
  const std::string good = manager.save(1, weights(1), {}, "{}");
  const pid_t child = fork();
  if (child == 0) {
    // The child may write at most 64 KiB per file: the 4 MB checkpoint cannot fit.
    signal(SIGXFSZ, SIG_IGN);
    rlimit limit{65536, 65536};
    setrlimit(RLIMIT_FSIZE, &limit);
    try {
      manager.save(2, weights(2, 1 << 20), {}, "{}");
    } catch (const IOError&) {
      _exit(3);
    }
    _exit(0);
  }
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 3) << "the failed write was not reported as an IOError";
  EXPECT_EQ(manager.latest().value(), good);
  EXPECT_EQ(load_checkpoint(run).model.at("w").to_vector<float>()[0], 1.0f);
  for (const auto& entry : fs::directory_iterator(run + "/checkpoints"))  // no temporary left behind
    EXPECT_EQ(entry.path().filename().string().find(".tmp"), std::string::npos) << entry.path();
}

TEST(Checkpoint, AKillDuringAWriteLeavesThePreviousCheckpointLoadable) {
  const std::string run = fresh_dir("kill");
  CheckpointManager manager(run, 3);
  manager.save(1, weights(1), {}, "{}");
  // Kill writers of a large checkpoint at several moments; the previous one always survives.
  for (int delay_us : {0, 2000, 10000, 40000, 150000}) {
    const pid_t child = fork();
    if (child == 0) {
      manager.save(2, weights(2, 50 << 20), {}, "{}");
      _exit(0);
    }
    usleep(static_cast<useconds_t>(delay_us));
    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    const std::string latest = manager.latest().value();
    EXPECT_TRUE(verify_checkpoint(latest).empty()) << verify_checkpoint(latest);
    const Checkpoint c = load_checkpoint(run);
    EXPECT_TRUE(c.step == 1 || c.step == 2);
    EXPECT_EQ(c.model.at("w").to_vector<float>()[0], static_cast<float>(c.step));
  }
}
