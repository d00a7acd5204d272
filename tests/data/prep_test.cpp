// Prep: exact round trips, EOS endings, splits, invalid input, and output that does not depend
// on threads or ranks.
#include <tsumugi/core/error.h>
#include <tsumugi/data/prep.h>

#include <gtest/gtest.h>

#include <filesystem>

#include "data/data_test_util.h"

namespace tsumugi {
namespace {

using testing::ScratchDir;
namespace fs = std::filesystem;

class PrepTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ScratchDir("tsumugi-prep-tokenizer");
    tokenizer_ = new Tokenizer(testing::train_tiny_tokenizer(*dir_ / "tiny", 400));
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete dir_;
  }
  PrepOptions options(const std::vector<std::string>& inputs, const std::string& out) const {
    PrepOptions o;
    o.inputs = inputs;
    o.tokenizer_path = *dir_ / "tiny.model";
    o.out_dir = out;
    o.val_fraction = 0.1;
    o.shard_tokens = 2000;
    o.block_bytes = 4096;
    o.threads = 2;
    return o;
  }
  // Documents of both splits, decoded, in input order (the split is a function of the text).
  std::vector<std::string> decode_both(const std::string& out, const std::vector<std::string>& inputs_order) const {
    const auto train = testing::decode_split(ShardSet::open(out + "/train"), *tokenizer_);
    const auto val = testing::decode_split(ShardSet::open(out + "/val"), *tokenizer_);
    std::vector<std::string> merged;
    size_t t = 0, v = 0;
    for (const auto& text : inputs_order) {
      const bool in_val = is_validation_document(text, 0.1);
      merged.push_back(in_val ? (v < val.size() ? val[v++] : "<missing>") : (t < train.size() ? train[t++] : "<missing>"));
    }
    EXPECT_EQ(t, train.size());
    EXPECT_EQ(v, val.size());
    return merged;
  }
  static ScratchDir* dir_;
  static Tokenizer* tokenizer_;
};
ScratchDir* PrepTest::dir_ = nullptr;
Tokenizer* PrepTest::tokenizer_ = nullptr;

std::vector<std::string> round_trip_documents() {
  auto documents = testing::make_documents(300, 7);
  for (const auto& text : testing::round_trip_texts()) {
    if (text.find("\n\n") == std::string::npos) documents.push_back(text);
  }
  documents.push_back("最後の文書: 鬱蒼とした森 😀 and bytes \xF0\x9F\xA6\x8A.");
  return documents;
}

TEST_F(PrepTest, RoundTripsTextThroughShardsExactly) {
  ScratchDir work("tsumugi-prep-roundtrip");
  const auto documents = round_trip_documents();
  for (const std::string name : {"c.jsonl", "c.jsonl.gz", "c.jsonl.zst", "c.txt", "c.txt.gz", "c.txt.zst"}) {
    const bool json = name.find("jsonl") != std::string::npos;
    testing::write_file(work / name, json ? testing::jsonl_of(documents) : testing::txt_of(documents));
    const PrepSummary summary = prepare_shards(options({work / name}, work / ("out-" + name)));
    EXPECT_EQ(summary.train.documents + summary.val.documents, documents.size()) << name;
    EXPECT_GT(summary.val.documents, 0u);
    EXPECT_GT(summary.train.shards, 1u);
    EXPECT_EQ(decode_both(work / ("out-" + name), documents), documents) << name;
  }
}

TEST_F(PrepTest, CountsSourceBytesAndEndsEveryDocumentWithEos) {
  ScratchDir work("tsumugi-prep-counts");
  const auto documents = round_trip_documents();
  testing::write_file(work / "c.jsonl", testing::jsonl_of(documents));
  prepare_shards(options({work / "c.jsonl"}, work / "out"));
  uint64_t expected_bytes = 0;
  for (const auto& text : documents) expected_bytes += text.size();
  const ShardSet train = ShardSet::open(work / "out/train"), val = ShardSet::open(work / "out/val");
  EXPECT_EQ(train.manifest().source_bytes + val.manifest().source_bytes, expected_bytes);
  for (const auto& shard : train.shards()) {
    const auto& offsets = shard.doc_offsets();
    std::vector<int32_t> tokens(shard.info().token_count);
    shard.read_tokens(0, tokens.size(), tokens.data());
    uint64_t eos_count = 0;
    for (int32_t id : tokens) eos_count += id == tokenizer_->eos_id();
    EXPECT_EQ(eos_count, shard.info().document_count);
    for (size_t d = 1; d < offsets.size(); ++d) EXPECT_EQ(tokens[offsets[d] - 1], tokenizer_->eos_id());
    EXPECT_EQ(shard.info().tokenizer_sha256, tokenizer_->sha256());
    // The tokenizer's byte count of the tokens is the text's size.
    EXPECT_EQ(tokenizer_->byte_count(tokens), shard.info().source_bytes);
  }
  EXPECT_EQ(Tokenizer::load(work / "out/tokenizer.model").sha256(), tokenizer_->sha256());
}

TEST_F(PrepTest, OutputDoesNotDependOnThreadsOrRanks) {
  ScratchDir work("tsumugi-prep-determinism");
  testing::write_file(work / "a.jsonl", testing::jsonl_of(testing::make_documents(400, 3)));
  testing::write_file(work / "b.txt.zst", testing::txt_of(testing::make_documents(300, 4)));
  const std::vector<std::string> inputs = {work / "a.jsonl", work / "b.txt.zst"};
  auto one = options(inputs, work / "one");
  one.threads = 1;
  prepare_shards(one);
  auto three = options(inputs, work / "three");
  three.threads = 3;
  prepare_shards(three);
  for (int world : {2, 3}) {
    // In-process ranks: each encodes its blocks into a part, then one merges.
    auto ranks = options(inputs, work / ("world" + std::to_string(world)));
    for (int rank = world - 1; rank >= 0; --rank) prepare_shard_part(ranks, rank, world);
    merge_shard_parts(ranks, world);
    EXPECT_FALSE(fs::exists(work / ("world" + std::to_string(world)) + "/.parts"));
  }
  for (const std::string out : {"three", "world2", "world3"}) {
    for (const std::string split : {"train", "val"}) {
      const ShardManifest a = ShardManifest::load(work / "one/" + split);
      const ShardManifest b = ShardManifest::load(work / out + "/" + split);
      ASSERT_EQ(a.shards.size(), b.shards.size()) << out;
      for (const auto& shard : a.shards) {
        EXPECT_EQ(testing::read_bytes(work / "one/" + split + "/" + shard.file),
                  testing::read_bytes(work / out + "/" + split + "/" + shard.file))
            << out << "/" << split << "/" << shard.file;
      }
    }
  }
}

TEST_F(PrepTest, StopsOnInvalidUtf8NamingFileAndLine) {
  ScratchDir work("tsumugi-prep-invalid");
  std::string content = testing::jsonl_of(testing::make_documents(50, 5));
  content += "{\"text\": \"bad \xFF byte\"}\n";
  content += testing::jsonl_of({"after the bad line"});
  testing::write_file(work / "bad.jsonl", content);
  try {
    prepare_shards(options({work / "bad.jsonl"}, work / "out"));
    FAIL() << "no error";
  } catch (const IOError& e) {
    EXPECT_NE(std::string(e.what()).find(work / "bad.jsonl" + ":51: invalid UTF-8 at byte 15"), std::string::npos)
        << e.what();
  }
}

TEST_F(PrepTest, SkipsInvalidRecordsWhenAskedAndReportsThem) {
  ScratchDir work("tsumugi-prep-skip");
  const auto documents = testing::make_documents(50, 5);
  std::string content = testing::jsonl_of(std::vector(documents.begin(), documents.begin() + 20));
  content += "{\"text\": \"bad \xC3\x28 byte\"}\n";
  content += "not json at all\n";
  content += testing::jsonl_of(std::vector(documents.begin() + 20, documents.end()));
  testing::write_file(work / "bad.jsonl", content);
  auto o = options({work / "bad.jsonl"}, work / "out");
  o.on_invalid = OnInvalid::skip;
  const PrepSummary summary = prepare_shards(o);
  ASSERT_EQ(summary.skipped.size(), 2u);
  EXPECT_EQ(summary.skipped[0].line, 21u);
  EXPECT_EQ(summary.skipped[1].message(), work / "bad.jsonl" + ":22: not a JSON object");
  EXPECT_EQ(decode_both(work / "out", documents), documents);
}

TEST_F(PrepTest, ValidationSplitIsAStableFunctionOfTheText) {
  int in_val = 0;
  for (const auto& text : testing::make_documents(2000, 9)) {
    in_val += is_validation_document(text, 0.1);
    EXPECT_EQ(is_validation_document(text, 0.1), is_validation_document(text, 0.1));
    EXPECT_FALSE(is_validation_document(text, 0.0));
  }
  EXPECT_GT(in_val, 150);
  EXPECT_LT(in_val, 250);
}

}  // namespace
}  // namespace tsumugi
