// Tokenizer: lossless round trips, byte fallback, byte accounting, identity, training options.
#include <tsumugi/core/error.h>
#include <tsumugi/tokenizer/tokenizer.h>
#include <tsumugi/tokenizer/trainer.h>

#include <gtest/gtest.h>

#include <fstream>

#include "tokenizer/tiny_tokenizer.h"

namespace tsumugi {
namespace {

using testing::ScratchDir;

class TinyTokenizer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ScratchDir("tsumugi-tokenizer-test");
    tokenizer_ = new Tokenizer(testing::train_tiny_tokenizer(*dir_ / "tiny", 400));
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete dir_;
  }
  static ScratchDir* dir_;
  static Tokenizer* tokenizer_;
};
ScratchDir* TinyTokenizer::dir_ = nullptr;
Tokenizer* TinyTokenizer::tokenizer_ = nullptr;

TEST_F(TinyTokenizer, HasTheRequestedVocabularyAndControlPieces) {
  EXPECT_EQ(tokenizer_->vocab_size(), 400);
  EXPECT_EQ(tokenizer_->piece(tokenizer_->eos_id()), "</s>");
  EXPECT_TRUE(tokenizer_->is_control(tokenizer_->eos_id()));
}

TEST_F(TinyTokenizer, RoundTripsJapaneseAsciiEmojiAndUnseenCharactersExactly) {
  for (const auto& text : testing::round_trip_texts()) {
    EXPECT_EQ(tokenizer_->decode(tokenizer_->encode(text)), text);
  }
}

TEST_F(TinyTokenizer, SpellsUnseenCharactersWithByteFallback) {
  const auto ids = tokenizer_->encode("𠮷");  // 4 UTF-8 bytes, not in the training text
  ASSERT_EQ(ids.size(), 4u);
  for (int32_t id : ids) EXPECT_TRUE(tokenizer_->is_byte(id)) << tokenizer_->piece(id);
  EXPECT_EQ(tokenizer_->piece(ids[0]), "<0xF0>");
}

TEST_F(TinyTokenizer, SplitsDigits) {
  const auto pieces = tokenizer_->encode_pieces("2024 model 12345");
  EXPECT_GE(pieces.size(), 9u);
  for (const auto& piece : pieces) {
    int digits = 0;
    for (char c : piece) digits += c >= '0' && c <= '9';
    EXPECT_LE(digits, 1) << piece;
  }
}

TEST_F(TinyTokenizer, ByteCountIsTheUtf8LengthOfTheText) {
  for (const auto& text : testing::round_trip_texts()) {
    EXPECT_EQ(tokenizer_->byte_count(tokenizer_->encode(text)), text.size()) << text;
  }
  const std::vector<int32_t> eos = {tokenizer_->eos_id()};
  EXPECT_EQ(tokenizer_->byte_count(eos), 0u);
}

TEST_F(TinyTokenizer, TokenBytesCountSpaceMarkerAsOneByte) {
  const auto& bytes = tokenizer_->token_bytes();
  ASSERT_EQ(bytes.size(), 400u);
  bool saw_space_piece = false;
  for (int32_t id = 0; id < tokenizer_->vocab_size(); ++id) {
    const std::string& piece = tokenizer_->piece(id);
    if (tokenizer_->is_byte(id)) {
      EXPECT_EQ(bytes[id], 1u) << piece;
    } else if (!tokenizer_->is_control(id) && id != tokenizer_->unk_id()) {
      const std::vector<int32_t> one = {id};
      EXPECT_EQ(bytes[id], tokenizer_->decode(one).size()) << piece;
      saw_space_piece |= piece.starts_with("\xE2\x96\x81");
    }
  }
  EXPECT_TRUE(saw_space_piece);
}

TEST_F(TinyTokenizer, IdentityIsTheSha256OfTheModelFile) {
  EXPECT_EQ(tokenizer_->sha256(), sha256_hex(tokenizer_->model_bytes()));
  EXPECT_EQ(Tokenizer::load(*dir_ / "tiny.model").sha256(), tokenizer_->sha256());
}

TEST_F(TinyTokenizer, DecodeRejectsIdsOutsideTheVocabulary) {
  const std::vector<int32_t> bad = {5, 400};
  EXPECT_THROW(tokenizer_->decode(bad), IndexError);
}

TEST(Sha256, MatchesFips180Examples) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Tokenizer, LoadNamesAMissingOrCorruptModelFile) {
  ScratchDir dir("tsumugi-tokenizer-bad");
  try {
    Tokenizer::load(dir / "missing.model");
    FAIL() << "no error";
  } catch (const IOError& e) {
    EXPECT_NE(std::string(e.what()).find("missing.model"), std::string::npos) << e.what();
  }
  std::ofstream(dir / "junk.model") << "this is not a protobuf";
  try {
    Tokenizer::load(dir / "junk.model");
    FAIL() << "no error";
  } catch (const IOError& e) {
    EXPECT_NE(std::string(e.what()).find("junk.model"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not a SentencePiece model"), std::string::npos) << e.what();
  }
}

TEST(TokenizerTrainer, RequiredCharsAreWholePiecesEvenWhenUnseen) {
  ScratchDir dir("tsumugi-tokenizer-seed");
  const Tokenizer tokenizer = testing::train_tiny_tokenizer(dir / "seeded", 400, "鬱蒼");
  EXPECT_EQ(tokenizer.encode_pieces("鬱蒼"), (std::vector<std::string>{"鬱", "蒼"}));
  const Tokenizer plain = testing::train_tiny_tokenizer(dir / "plain", 400);
  EXPECT_EQ(plain.encode("鬱蒼").size(), 6u);  // two 3-byte characters as byte pieces
}

TEST(TokenizerTrainer, RejectsAVocabularyWithNoRoomBeyondBytes) {
  TokenizerTrainOptions options;
  options.model_prefix = "/tmp/unused";
  options.vocab_size = 200;
  EXPECT_THROW(train_tokenizer(options, [](std::string&) { return false; }), ValueError);
}

}  // namespace
}  // namespace tsumugi
