// Lesson 5: pretraining with the library's own pieces.
//
// `tsumugi train` is a loop over pieces that you can call yourself: a tokenizer, shards, a
// loader, a model, AdamW, a learning-rate schedule, checkpoints and evaluation. This lesson
// writes that loop out. With no argument it makes a tiny corpus in a temporary folder; given the
// folder of `tsumugi prep` (e.g. data/ja/shards after tools/quickstart.sh) it trains on that.
//   build/examples/05_pretrain [SHARDS_DIR]
#include <tsumugi/data/loader.h>
#include <tsumugi/data/prep.h>
#include <tsumugi/tokenizer/trainer.h>
#include <tsumugi/train/checkpoint.h>
#include <tsumugi/train/eval.h>
#include <tsumugi/train/generate.h>
#include <tsumugi/train/schedule.h>
#include <tsumugi/tsumugi.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using namespace tsumugi;
namespace fs = std::filesystem;

namespace {

// A few sentences to build a small corpus from (written for this lesson).
const char* kSentences[] = {
    "糸をつむぐおばあさんが山のふもとの村に住んでいました。", "春には桜の花が咲き、夏には川の音が聞こえます。",
    "秋には赤い葉が舞い、冬には白い雪が積もります。", "子どもたちは糸車の回る音を聞くのが好きでした。",
    "一本の糸は弱いけれど、より合わせると強い布になります。", "設定ファイルを変更してから、もう一度実行してください。",
    "このコマンドはファイルを読み込み、結果を表示します。", "日本語の文章を学習するモデルを作ります。",
    "データを小さく分けて、順番に読み込みます。", "明日の天気は晴れのち雨でしょう。"};

// Step 1 (only without an argument): documents -> tokenizer -> shards, all in `dir`.
std::string make_tiny_corpus(const std::string& dir) {
  fs::create_directories(dir);
  Generator gen(3);
  std::ofstream corpus(dir + "/corpus.txt");
  for (int d = 0; d < 400; ++d) {  // documents of a few random sentences, separated by blank lines
    for (int32_t s : randint(0, 10, {1 + d % 4}, gen).to_vector<int32_t>()) corpus << kSentences[s];
    corpus << "\n\n";
  }
  corpus.close();
  TokenizerTrainOptions options;
  options.model_prefix = dir + "/tokenizer";
  options.vocab_size = 380;  // 256 byte pieces, 3 control pieces, 116 characters and a few words
  std::ifstream text(dir + "/corpus.txt");
  train_tokenizer(options, [&](std::string& line) { return static_cast<bool>(std::getline(text, line)); });
  PrepOptions prep;
  prep.inputs = {dir + "/corpus.txt"};
  prep.tokenizer_path = dir + "/tokenizer.model";
  prep.out_dir = dir + "/shards";
  prep.val_fraction = 0.05;
  prepare_shards(prep);
  return prep.out_dir;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string work = (fs::temp_directory_path() / "tsumugi-05-pretrain").string();
  const std::string shards = argc > 1 ? argv[1] : make_tiny_corpus(work);

  // 2. The tokenizer that made the shards; prep copies it beside them.
  const Tokenizer tokenizer = Tokenizer::load(shards + "/tokenizer.model");
  std::printf("tokenizer: %d pieces, SHA-256 %.12s...\n", tokenizer.vocab_size(), tokenizer.sha256().c_str());

  // 3. The data: a loader draws windows of seq_len + 1 tokens in a seeded order; its whole state
  //    is (seed, samples consumed). The validation iterator reads the val split once, in order.
  constexpr int64_t kSeqLen = 64, kBatch = 8, kSteps = 150;
  const ShardSetOptions checked{.verify_checksums = true, .expected_tokenizer_sha256 = tokenizer.sha256()};
  DataLoader loader(shards + "/train", {.seq_len = kSeqLen, .global_batch = kBatch, .seed = 1}, checked);
  ValidationIterator validation(shards + "/val", kSeqLen, kBatch, 0, 1, checked);
  std::printf("data: %llu windows of %lld tokens per epoch\n",
              static_cast<unsigned long long>(loader.windows_per_epoch()), static_cast<long long>(kSeqLen));

  // 4. The model, the optimizer and the schedule.
  ModelConfig config{.arch = Arch::llama, .layers = 2, .heads = 4, .kv_heads = 2, .dim = 64,
                     .vocab = tokenizer.vocab_size(), .context = kSeqLen};
  auto model = make_model(config);
  model->init_weights(/*seed=*/0);
  AdamW optimizer(model->named_parameters(), {.lr = 3e-3, .beta1 = 0.9, .beta2 = 0.95, .weight_decay = 0.1});
  const LRSchedule schedule{.kind = "cosine", .lr = 3e-3, .min_lr = 3e-4, .warmup_steps = 10, .total_steps = kSteps};
  std::printf("model: llama, %.2f M parameters\n", model->num_parameters() / 1e6);

  // 5. The loop: a batch, forward, loss, backward, clip, step. Every 50 steps: evaluate.
  for (int64_t step = 0; step < kSteps; ++step) {
    const Batch batch = loader.next();
    optimizer.set_lr(schedule.at(step));
    Tensor loss = cross_entropy(model->forward(batch.inputs).view({-1, config.vocab}), batch.targets.view({-1}));
    loss.backward();
    const double norm = clip_grad_norm(model->parameters(), 1.0);
    optimizer.step();
    optimizer.zero_grad();
    if ((step + 1) % 50 == 0) {
      const EvalResult eval = evaluate(*model, validation, tokenizer);
      std::printf("step %3lld  loss %.3f  grad norm %.2f  | validation: loss %.3f, %.3f bits per byte\n",
                  static_cast<long long>(step + 1), loss.item<float>(), norm, eval.loss, eval.bits_per_byte);
    }
  }

  // 6. A checkpoint: written to a temporary folder, then renamed into place; read back and verified.
  CheckpointManager checkpoints(work + "/run", /*keep=*/1);
  const std::string dir = checkpoints.save(kSteps, model->state_dict(), optimizer.state_dict(),
                                           R"({"note": "05_pretrain"})");
  const Checkpoint saved = load_checkpoint(work + "/run");
  auto restored = make_model(config);
  restored->load_state_dict(saved.model);
  std::printf("checkpoint: %s (step %lld), restored\n", dir.c_str(), static_cast<long long>(saved.step));

  // 7. Writing with the restored model.
  Generator gen(7);
  std::vector<int64_t> prompt;
  for (int32_t id : tokenizer.encode("春には")) prompt.push_back(id);
  const std::vector<int64_t> out = generate(*restored, prompt, 30, {.temperature = 0.7, .top_k = 20}, gen,
                                            tokenizer.eos_id());
  std::printf("the model writes: 春には%s\n", tokenizer.decode(std::vector<int32_t>(out.begin(), out.end())).c_str());
  return 0;
}
