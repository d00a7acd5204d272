// Shards: what the writer stores, and one clear error per kind of damage.
#include <tsumugi/core/error.h>
#include <tsumugi/data/shard.h>

#include <gtest/gtest.h>
#include <hdf5.h>

#include <filesystem>
#include <fstream>

#include "data/data_test_util.h"

namespace tsumugi {
namespace {

using testing::ScratchDir;
namespace fs = std::filesystem;

// Documents 0..n-1, document d holding tokens (d * 7 + k) % (vocab - 3) + 3 for k < length, then EOS 2.
std::vector<std::vector<int32_t>> make_token_documents(int count, int32_t vocab) {
  std::vector<std::vector<int32_t>> documents;
  for (int d = 0; d < count; ++d) {
    std::vector<int32_t> tokens;
    const int length = 1 + d % 13;
    for (int k = 0; k < length; ++k) tokens.push_back((d * 7 + k * 977) % (vocab - 3) + 3);
    tokens.push_back(2);
    documents.push_back(tokens);
  }
  return documents;
}

ShardManifest write_set(const std::string& dir, const std::vector<std::vector<int32_t>>& documents, int32_t vocab,
                        const std::string& sha, uint64_t shard_tokens) {
  ShardSetWriter writer(dir, "train", sha, static_cast<uint64_t>(vocab), 2, shard_tokens);
  for (const auto& document : documents) writer.add_document(document, document.size() * 3);
  return writer.finish();
}

std::string expect_io_error(const std::function<void()>& action) {
  try {
    action();
  } catch (const IOError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no IOError";
  return {};
}

const std::string kSha(64, 'a');
const std::string kOtherSha(64, 'b');

TEST(ShardSet, StoresDocumentsAcrossShardsAndReadsThemBack) {
  ScratchDir dir("tsumugi-shards");
  const auto documents = make_token_documents(200, 8000);
  const ShardManifest manifest = write_set(dir.str(), documents, 8000, kSha, 300);
  EXPECT_GT(manifest.shards.size(), 3u);
  EXPECT_EQ(manifest.documents, 200u);
  EXPECT_EQ(manifest.token_dtype, "uint16");
  const ShardSet set = ShardSet::open(dir.str());
  std::vector<int32_t> stream;
  uint64_t index = 0;
  for (const auto& shard : set.shards()) {
    if (&shard != &set.shards().back()) {
      EXPECT_GE(shard.info().token_count, 300u);  // a shard closes at the first document end past 300
      EXPECT_LT(shard.info().token_count, 300u + 14u);
    }
    for (uint64_t d = 0; d < shard.info().document_count; ++d) {
      EXPECT_EQ(shard.document_tokens(d), documents[index++]);
    }
  }
  for (const auto& document : documents) stream.insert(stream.end(), document.begin(), document.end());
  ASSERT_EQ(set.total_tokens(), stream.size());
  // Reads that cross shard ends see the concatenated stream.
  std::vector<int32_t> window(700);
  set.read_tokens(250, 700, window.data());
  EXPECT_TRUE(std::equal(window.begin(), window.end(), stream.begin() + 250));
}

TEST(ShardSet, UsesUint32TokensAboveSixtyFiveThousandPieces) {
  ScratchDir dir("tsumugi-shards-u32");
  const auto documents = make_token_documents(20, 100000);
  EXPECT_EQ(write_set(dir.str(), documents, 100000, kSha, 1000).token_dtype, "uint32");
  const ShardSet set = ShardSet::open(dir.str());
  EXPECT_EQ(set.shards()[0].info().token_width, 4u);
  EXPECT_EQ(set.shards()[0].document_tokens(5), documents[5]);
  ScratchDir small("tsumugi-shards-u16");
  EXPECT_EQ(write_set(small.str(), make_token_documents(20, 65536), 65536, kSha, 1000).token_dtype, "uint16");
}

TEST(ShardSet, WritesTheSameBytesForTheSameDocuments) {
  ScratchDir a("tsumugi-shards-a"), b("tsumugi-shards-b");
  write_set(a.str(), make_token_documents(50, 8000), 8000, kSha, 100000);
  write_set(b.str(), make_token_documents(50, 8000), 8000, kSha, 100000);
  EXPECT_EQ(testing::read_bytes(a / "shard-00000.h5"), testing::read_bytes(b / "shard-00000.h5"));
}

TEST(ShardSet, RejectsDocumentsWithoutEos) {
  ScratchDir dir("tsumugi-shards-eos");
  ShardSetWriter writer(dir.str(), "train", kSha, 8000, 2, 100);
  const std::vector<int32_t> no_eos = {5, 6, 7};
  EXPECT_THROW(writer.add_document(no_eos, 3), ValueError);
}

// A shard that cannot be written (here its temporary's name is taken by a folder; in life a full
// disk) is one IOError naming the shard; nothing is left under the shard's name, no manifest
// vouches for the split, and the writer takes no more documents.
TEST(ShardSet, AShardThatCannotBeWrittenLeavesNoSplitBehind) {
  ScratchDir dir("tsumugi-shards-unwritable");
  const auto documents = make_token_documents(100, 8000);
  ShardSetWriter writer(dir.str(), "train", kSha, 8000, 2, 200);
  fs::create_directories(fs::path(dir / "shard-00001.h5.tmp") / "blocker");
  const std::string message = expect_io_error([&] {
    for (const auto& document : documents) writer.add_document(document, document.size());
  });
  EXPECT_NE(message.find("shard-00001.h5"), std::string::npos) << message;
  EXPECT_TRUE(fs::exists(dir / "shard-00000.h5"));  // the shard before it is complete
  EXPECT_FALSE(fs::exists(dir / "shard-00001.h5"));
  EXPECT_FALSE(fs::exists(dir / "manifest.json"));
  EXPECT_THROW(writer.add_document(documents[0], 1), IOError);
  EXPECT_THROW(writer.finish(), IOError);
  EXPECT_FALSE(fs::exists(dir / "manifest.json"));
  EXPECT_NE(expect_io_error([&] { ShardSet::open(dir.str()); }).find("manifest.json"), std::string::npos);
}

class DamagedShard : public ::testing::Test {
 protected:
  void SetUp() override {
    write_set(dir_.str(), make_token_documents(300, 8000), 8000, kSha, 500);
    shard_ = dir_ / "shard-00001.h5";
  }
  ScratchDir dir_{"tsumugi-shards-damaged"};
  std::string shard_;
};

TEST_F(DamagedShard, TruncatedFileNamesFileAndSize) {
  const std::string bytes = testing::read_bytes(shard_);
  std::ofstream(shard_, std::ios::binary | std::ios::trunc) << bytes.substr(0, bytes.size() - 100);
  const std::string message = expect_io_error([&] { ShardSet::open(dir_.str()); });
  EXPECT_NE(message.find(shard_), std::string::npos) << message;
  EXPECT_NE(message.find("truncated"), std::string::npos) << message;
  // Opened alone, without the manifest's size, HDF5's own check finds it.
  const std::string alone = expect_io_error([&] { ShardReader::open(shard_); });
  EXPECT_NE(alone.find(shard_), std::string::npos) << alone;
  EXPECT_NE(alone.find("truncated"), std::string::npos) << alone;
}

TEST_F(DamagedShard, FlippedTokenBytesFailTheChecksum) {
  // Find /tokens in the file, then flip bytes in the middle of it.
  haddr_t offset;
  {
    const hid_t file = H5Fopen(shard_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    const hid_t tokens = H5Dopen2(file, "tokens", H5P_DEFAULT);
    offset = H5Dget_offset(tokens);
    H5Dclose(tokens);
    H5Fclose(file);
  }
  std::string bytes = testing::read_bytes(shard_);
  bytes[offset + 101] ^= 0x5A;
  bytes[offset + 102] ^= 0x01;
  std::ofstream(shard_, std::ios::binary | std::ios::trunc) << bytes;
  const std::string message = expect_io_error([&] { ShardSet::open(dir_.str()); });
  EXPECT_NE(message.find(shard_), std::string::npos) << message;
  EXPECT_NE(message.find("checksum mismatch"), std::string::npos) << message;
}

TEST_F(DamagedShard, FlippedMetadataBytesAreReportedAsCorrupt) {
  std::string bytes = testing::read_bytes(shard_);
  for (size_t i = 0; i < 8; ++i) bytes[i] ^= 0xFF;  // the HDF5 signature
  std::ofstream(shard_, std::ios::binary | std::ios::trunc) << bytes;
  const std::string message = expect_io_error([&] { ShardSet::open(dir_.str()); });
  EXPECT_NE(message.find(shard_), std::string::npos) << message;
  EXPECT_NE(message.find("not a readable HDF5 file"), std::string::npos) << message;
}

TEST_F(DamagedShard, ShardFromAnotherTokenizerIsNamed) {
  ScratchDir other("tsumugi-shards-other");
  write_set(other.str(), make_token_documents(300, 8000), 8000, kOtherSha, 500);
  fs::copy_file(other / "shard-00001.h5", shard_, fs::copy_options::overwrite_existing);
  const std::string message = expect_io_error([&] { ShardSet::open(dir_.str()); });
  EXPECT_NE(message.find(shard_), std::string::npos) << message;
  EXPECT_NE(message.find("made with another tokenizer"), std::string::npos) << message;
  EXPECT_NE(message.find(kOtherSha), std::string::npos) << message;
}

TEST_F(DamagedShard, LoaderGivenAnotherTokenizerIsTold) {
  const std::string message =
      expect_io_error([&] { ShardSet::open(dir_.str(), {.verify_checksums = true, .expected_tokenizer_sha256 = kOtherSha}); });
  EXPECT_NE(message.find("manifest.json"), std::string::npos) << message;
  EXPECT_NE(message.find("made with another tokenizer"), std::string::npos) << message;
}

TEST_F(DamagedShard, MissingFileIsNamed) {
  fs::remove(shard_);
  const std::string message = expect_io_error([&] { ShardSet::open(dir_.str()); });
  EXPECT_NE(message.find(shard_), std::string::npos) << message;
  EXPECT_NE(message.find("missing"), std::string::npos) << message;
}

TEST_F(DamagedShard, ManifestCannotNameAFileOutsideItsFolder) {
  std::string manifest = testing::read_bytes(dir_ / "manifest.json");
  const size_t at = manifest.find("shard-00001.h5");
  ASSERT_NE(at, std::string::npos);
  manifest.replace(at, 14, "../elsewhere/shard-00001.h5");
  std::ofstream(dir_ / "manifest.json", std::ios::trunc) << manifest;
  const std::string message = expect_io_error([&] { ShardSet::open(dir_.str()); });
  EXPECT_NE(message.find("not a plain file name"), std::string::npos) << message;
}

// Counts must be integers that fit: 1e300 was undefined behaviour (a float converted to uint64),
// -1 wrapped to 2^64 - 1 (fuzz_checkpoint found the same in trainer.json).
TEST_F(DamagedShard, ManifestCountsThatAreNotIntegersAreNamed) {
  const std::string original = testing::read_bytes(dir_ / "manifest.json");
  for (const char* bad : {"1e300", "-1", "2.5", "\"12\""}) {
    std::string manifest = original;
    const size_t at = manifest.find("\"documents\": ");
    ASSERT_NE(at, std::string::npos);
    const size_t value = at + 13, end = manifest.find_first_of(",\n}", value);
    manifest.replace(value, end - value, bad);
    std::ofstream(dir_ / "manifest.json", std::ios::trunc) << manifest;
    const std::string message = expect_io_error([&] { ShardSet::open(dir_.str()); });
    EXPECT_NE(message.find("manifest.json"), std::string::npos) << bad << ": " << message;
    EXPECT_NE(message.find("documents"), std::string::npos) << bad << ": " << message;
  }
}

TEST_F(DamagedShard, MissingManifestIsNamed) {
  fs::remove(dir_ / "manifest.json");
  const std::string message = expect_io_error([&] { ShardSet::open(dir_.str()); });
  EXPECT_NE(message.find(dir_ / "manifest.json"), std::string::npos) << message;
  EXPECT_NE(message.find("missing"), std::string::npos) << message;
}

}  // namespace
}  // namespace tsumugi
