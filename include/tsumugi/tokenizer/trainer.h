#pragma once
/// Training a SentencePiece unigram tokenizer for Japanese: byte fallback, split digits, identity
/// normalization (lossless), and an alphabet seeded with kana and common kanji.
#include <cstdint>
#include <functional>
#include <string>

namespace tsumugi {

/// Settings of `train_tokenizer`. The fixed choices (unigram, byte fallback, split digits,
/// identity normalization, no dummy prefix, whitespace kept) are not options: they make the
/// tokenizer lossless, which the shards and bits-per-byte rely on.
struct TokenizerTrainOptions {
  std::string model_prefix;              ///< writes model_prefix + ".model" and ".vocab"
  int32_t vocab_size = 8000;             ///< pieces, including 256 byte pieces and <unk> <s> </s>
  std::string required_chars;            ///< UTF-8 characters always in the alphabet (seed_alphabet)
  double character_coverage = 0.9995;    ///< share of characters covered by the alphabet
  int32_t num_threads = 0;               ///< training threads; 0 means all cores
  uint64_t max_lines = 0;                ///< sample at most this many lines (0: use all)
  int32_t max_line_bytes = 16384;        ///< longer lines are cut into pieces of this many bytes
  uint32_t seed = 0;                     ///< seed of SentencePiece's sampling
  bool verbose = false;                  ///< print SentencePiece's training log to stderr
};

/// What training saw and made.
struct TokenizerTrainResult {
  std::string model_path;  ///< model_prefix + ".model"
  uint64_t documents = 0;  ///< documents read from the source
  uint64_t lines = 0;      ///< non-empty lines given to SentencePiece
  uint64_t bytes = 0;      ///< UTF-8 bytes in those lines
  double seconds = 0;      ///< wall time of training
};

/// Source of training documents: fills `text` and returns true, or returns false at the end.
using DocumentSource = std::function<bool(std::string& text)>;

/// Trains a unigram model on the lines of every document from `next_document`.
TokenizerTrainResult train_tokenizer(const TokenizerTrainOptions& options, const DocumentSource& next_document);

/// Hiragana U+3041-3096, katakana U+30A1-30FA and the long vowel mark ー, as UTF-8.
std::string kana_alphabet();

/// The `count` kanji that occur in the most entries of a MeCab IPADIC source dictionary (the
/// EUC-JP *.csv files in `ipadic_dir`, e.g. /usr/share/mecab/dic/ipadic), most frequent first, as
/// UTF-8. Throws IOError naming the folder when it holds no dictionary CSV.
std::string common_kanji_from_ipadic(const std::string& ipadic_dir, int32_t count);

/// The default location of Debian's mecab-ipadic source dictionary.
inline constexpr const char* kDebianIpadicDir = "/usr/share/mecab/dic/ipadic";

}  // namespace tsumugi
