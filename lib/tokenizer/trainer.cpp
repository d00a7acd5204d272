// train_tokenizer: feeds documents, line by line, to SentencePiece's unigram trainer.
#include <sentencepiece_trainer.h>

#include <chrono>
#include <filesystem>
#include <thread>
#include <unordered_map>

#include <tsumugi/tokenizer/trainer.h>

#include "core/check.h"

// Exported by libsentencepiece but not declared in its public headers: the trainer logs every
// step to stderr at INFO level unless told otherwise.
namespace sentencepiece::logging {
void SetMinLogLevel(int level);
}

namespace tsumugi {
namespace {

// Length of the longest prefix of `text` of at most `limit` bytes that ends on a character boundary.
size_t utf8_prefix(std::string_view text, size_t limit) {
  if (text.size() <= limit) return text.size();
  size_t cut = limit;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return cut > 0 ? cut : limit;
}

// The lines of every document, in order; SentencePiece trains on one line at a time.
class DocumentLines : public sentencepiece::SentenceIterator {
 public:
  DocumentLines(const DocumentSource& source, size_t max_line_bytes, TokenizerTrainResult& counts)
      : source_(source), max_line_bytes_(max_line_bytes), counts_(counts) {
    Next();
  }
  bool done() const override { return done_; }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override { return {}; }
  void Next() override {
    while (true) {
      while (rest_.empty()) {
        if (!source_(document_)) {
          done_ = true;
          return;
        }
        ++counts_.documents;
        rest_ = document_;
      }
      const size_t newline = rest_.find('\n');
      std::string_view line = rest_.substr(0, newline);
      if (line.size() > max_line_bytes_) line = line.substr(0, utf8_prefix(line, max_line_bytes_));
      // Consume the line and, when it ended there, its newline.
      const bool at_newline = line.size() < rest_.size() && rest_[line.size()] == '\n';
      rest_.remove_prefix(line.size() + (at_newline ? 1 : 0));
      if (line.empty()) continue;
      line_.assign(line);
      ++counts_.lines;
      counts_.bytes += line.size();
      return;
    }
  }

 private:
  const DocumentSource& source_;
  size_t max_line_bytes_;
  TokenizerTrainResult& counts_;
  std::string document_;
  std::string_view rest_;
  std::string line_;
  bool done_ = false;
};

}  // namespace

TokenizerTrainResult train_tokenizer(const TokenizerTrainOptions& options, const DocumentSource& next_document) {
  TSU_CHECK(!options.model_prefix.empty(), ValueError, "[tokenizer train] model_prefix is empty");
  TSU_CHECK(options.vocab_size > 259, ValueError,
            "[tokenizer train] vocab_size {} leaves no room beyond the 256 byte pieces and <unk> <s> </s>",
            options.vocab_size);
  TSU_CHECK(options.max_line_bytes >= 16, ValueError, "[tokenizer train] max_line_bytes {} is too small",
            options.max_line_bytes);
  const auto parent = std::filesystem::path(options.model_prefix).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);

  const int threads = options.num_threads > 0 ? options.num_threads
                                              : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::unordered_map<std::string, std::string> spec = {
      {"model_prefix", options.model_prefix},
      {"model_type", "unigram"},
      {"vocab_size", std::to_string(options.vocab_size)},
      {"byte_fallback", "true"},
      {"split_digits", "true"},
      // Lossless: no normalization, no dummy prefix space, whitespace kept exactly as written.
      {"normalization_rule_name", "identity"},
      {"add_dummy_prefix", "false"},
      {"remove_extra_whitespaces", "false"},
      {"character_coverage", std::to_string(options.character_coverage)},
      {"num_threads", std::to_string(threads)},
      {"max_sentence_length", std::to_string(options.max_line_bytes)},
      {"input_sentence_size", std::to_string(options.max_lines)},
      {"shuffle_input_sentence", "true"},
  };
  if (!options.required_chars.empty()) spec["required_chars"] = options.required_chars;

  sentencepiece::SetRandomGeneratorSeed(options.seed);
  sentencepiece::logging::SetMinLogLevel(options.verbose ? 0 : 2);
  TokenizerTrainResult result;
  result.model_path = options.model_prefix + ".model";
  const auto start = std::chrono::steady_clock::now();
  DocumentLines lines(next_document, static_cast<size_t>(options.max_line_bytes), result);
  const auto status = sentencepiece::SentencePieceTrainer::Train(spec, &lines);
  TSU_CHECK(status.ok(), ValueError, "[tokenizer train] SentencePiece failed: {}", status.ToString());
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace tsumugi
