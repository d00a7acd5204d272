// Corpus building blocks: duplicate paragraphs, statistics.
#include <tsumugi/data/corpus.h>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "data/data_test_util.h"

namespace tsumugi {
namespace {

using testing::ScratchDir;

TEST(Corpus, RemovesDuplicateParagraphsAcrossFilesKeepingTheFirst) {
  ScratchDir dir("tsumugi-corpus-dedup");
  testing::write_file(dir / "a.jsonl", R"({"text": "名前\n説明\n本文その一", "source": "a/1"})" "\n"
                                       R"({"text": "名前\n本文その二", "source": "a/2"})" "\n");
  testing::write_file(dir / "b.jsonl", R"({"text": "名前\n説明", "source": "b/1"})" "\n"
                                       R"({"text": "本文その三\n本文その三", "source": "b/2"})" "\n");
  const DedupStats stats = remove_duplicate_paragraphs({dir / "a.jsonl", dir / "b.jsonl"}, dir / "out.jsonl");
  EXPECT_EQ(stats.documents_in, 4u);
  EXPECT_EQ(stats.documents_out, 3u);  // b/1 held only repeats
  EXPECT_EQ(stats.paragraphs_in, 9u);
  EXPECT_EQ(stats.paragraphs_out, 5u);
  std::vector<std::pair<std::string, std::string>> records;
  std::istringstream lines(testing::read_bytes(dir / "out.jsonl"));
  for (std::string line; std::getline(lines, line);) {
    const auto json = nlohmann::json::parse(line);
    records.emplace_back(json["text"], json["source"]);
  }
  EXPECT_EQ(records, (std::vector<std::pair<std::string, std::string>>{
                         {"名前\n説明\n本文その一", "a/1"}, {"本文その二", "a/2"}, {"本文その三", "b/2"}}));
}

TEST(Corpus, SummaryCountsCharactersBytesAndJapaneseShare) {
  ScratchDir dir("tsumugi-corpus-summary");
  testing::write_file(dir / "c.jsonl", R"({"text": "日本語ab"})" "\n" R"({"text": "カナ、 c"})" "\n");
  const CorpusSummary summary = summarize_corpus(dir / "c.jsonl");
  EXPECT_EQ(summary.documents, 2u);
  EXPECT_EQ(summary.characters, 5u + 5u);
  EXPECT_EQ(summary.nonspace_characters, 9u);
  EXPECT_EQ(summary.japanese_characters, 6u);  // 日本語, カナ, 、
  EXPECT_EQ(summary.bytes, 11u + 11u);
  EXPECT_DOUBLE_EQ(summary.japanese_share(), 6.0 / 9.0);
}

TEST(Corpus, QuickstartUsesTheThirteenPackages) {
  const auto& packages = debian_ja_packages();
  EXPECT_EQ(packages.size(), 13u);
  EXPECT_EQ(packages.front(), "manpages-ja");
}

}  // namespace
}  // namespace tsumugi
