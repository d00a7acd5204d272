#pragma once
// Test helpers: a small mixed Japanese/ASCII corpus written in the test, a tiny tokenizer
// trained on it (vocab a few hundred, seconds), and a scratch folder.
#include <tsumugi/tokenizer/tokenizer.h>
#include <tsumugi/tokenizer/trainer.h>

#include <unistd.h>

#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace tsumugi::testing {

/// A fresh folder under the system temp dir, removed by the destructor.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name) {
    path_ = std::filesystem::temp_directory_path() /
            (name + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() { std::filesystem::remove_all(path_); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  static int& counter() {
    static int value = 0;
    return value;
  }
  std::filesystem::path path_;
};

/// `count` documents of mixed Japanese and ASCII sentences, the same for the same seed.
inline std::vector<std::string> make_documents(int count, uint32_t seed = 1) {
  static const std::vector<std::string> words = {
      "東京", "大阪", "天気", "晴れ", "雨", "今日", "明日", "ファイル", "設定", "変更", "する", "します", "です",
      "ます", "の", "は", "を", "に", "が", "と", "で", "から", "まで", "データ", "学習", "モデル", "日本語",
      "文章", "読み込み", "書き込み", "コマンド", "オプション", "file", "the", "model", "data", "config", "run",
      "train", "token", "shard", "Tokyo", "value", "error", "、", "。", "「", "」", "(", ")", " "};
  std::mt19937 rng(seed);
  std::vector<std::string> documents;
  for (int d = 0; d < count; ++d) {
    std::string text;
    const int lines = 1 + static_cast<int>(rng() % 4);
    for (int l = 0; l < lines; ++l) {
      if (l > 0) text += '\n';
      const int length = 5 + static_cast<int>(rng() % 20);
      for (int w = 0; w < length; ++w) text += words[rng() % words.size()];
      text += std::to_string(rng() % 1000) + "。";
    }
    documents.push_back(text);
  }
  return documents;
}

/// Trains a tokenizer with `vocab_size` pieces on make_documents(600) into `prefix`.model.
inline Tokenizer train_tiny_tokenizer(const std::string& prefix, int32_t vocab_size = 400,
                                      const std::string& required_chars = "", uint32_t corpus_seed = 1) {
  const auto documents = make_documents(600, corpus_seed);
  size_t next = 0;
  TokenizerTrainOptions options;
  options.model_prefix = prefix;
  options.vocab_size = vocab_size;
  options.required_chars = required_chars;
  options.num_threads = 2;
  const auto result = train_tokenizer(options, [&](std::string& text) {
    if (next == documents.size()) return false;
    text = documents[next++];
    return true;
  });
  return Tokenizer::load(result.model_path);
}

/// Texts that a lossless tokenizer must give back exactly.
inline std::vector<std::string> round_trip_texts() {
  return {"東京の天気は晴れです。",
          "plain ASCII, with  two spaces and a trailing space ",
          " leading space and\ttab",
          "emoji 😀🎌 and ZWJ 👨‍👩‍👧",
          "unseen kanji 鬱蒼 and 𠮷野家 (outside the BMP)",
          "lines\nand\r\nCRLF\n\nand a blank line",
          "digits 1234567890 and ０１２ fullwidth",
          "ｶﾀｶﾅ half-width, Ω, é (precomposed) and é (combining)"};
}

}  // namespace tsumugi::testing
