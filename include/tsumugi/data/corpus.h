#pragma once
/// Corpora from local sources: the quickstart corpus built from Debian's Japanese documentation
/// (`tsumugi corpus debian-ja`), duplicate-paragraph removal, and corpus statistics.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace tsumugi {

/// The thirteen Debian 12 packages with Japanese documentation used by the quickstart corpus.
const std::vector<std::string>& debian_ja_packages();

/// Size and script mix of a JSON-lines corpus.
struct CorpusSummary {
  uint64_t documents = 0;
  uint64_t characters = 0;           ///< Unicode code points of all texts
  uint64_t japanese_characters = 0;  ///< kana, kanji, CJK punctuation and fullwidth forms
  uint64_t nonspace_characters = 0;  ///< characters that are not whitespace
  uint64_t bytes = 0;                ///< UTF-8 bytes of all texts
  /// Japanese characters / non-whitespace characters, in [0, 1].
  double japanese_share() const {
    return nonspace_characters ? static_cast<double>(japanese_characters) / nonspace_characters : 0.0;
  }
};

/// Counts the "text" fields of a JSON-lines file; throws IOError naming file and line.
CorpusSummary summarize_corpus(const std::string& jsonl_path);

/// What duplicate removal did.
struct DedupStats {
  uint64_t documents_in = 0, documents_out = 0;
  uint64_t paragraphs_in = 0, paragraphs_out = 0;  ///< paragraphs are the lines of a text
};

/// Concatenates JSON-lines files ({"text", "source"}) in order, keeping only the first copy of
/// each paragraph (exact match); documents left empty are dropped. Writes `output_path`.
DedupStats remove_duplicate_paragraphs(const std::vector<std::string>& input_paths, const std::string& output_path);

/// Settings of build_debian_ja_corpus.
struct DebianJaOptions {
  std::string out_dir;                                ///< gets debs/, extracted/, debian-ja.jsonl, summary.json
  std::vector<std::string> packages = debian_ja_packages();
  std::string helper;                                 ///< path of tools/corpus/debian_ja.py
  int jobs = 0;                                       ///< extraction processes; 0 means all cores
  std::function<void(const std::string&)> log;        ///< progress lines
};

/// The result of build_debian_ja_corpus.
struct DebianJaResult {
  std::string corpus_path;  ///< OUT/debian-ja.jsonl
  CorpusSummary summary;
  DedupStats dedup;
  double seconds = 0;
};

/// Downloads the packages with `apt-get download` (no install; only those not yet in OUT/debs),
/// extracts clean paragraphs with the Python helper (reusing up-to-date results), removes
/// duplicate paragraphs and writes OUT/debian-ja.jsonl and OUT/summary.json.
DebianJaResult build_debian_ja_corpus(const DebianJaOptions& options);

}  // namespace tsumugi
