// The seed alphabet: kana, and kanji ranked from a MeCab IPADIC dictionary (EUC-JP CSV).
#include <tsumugi/core/error.h>
#include <tsumugi/tokenizer/trainer.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tokenizer/tiny_tokenizer.h"

namespace tsumugi {
namespace {

// Code points of a UTF-8 string.
std::vector<char32_t> code_points(const std::string& text) {
  std::vector<char32_t> out;
  for (size_t i = 0; i < text.size();) {
    const auto lead = static_cast<unsigned char>(text[i]);
    const int length = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
    char32_t c = length == 1 ? lead : length == 2 ? lead & 0x1F : length == 3 ? lead & 0x0F : lead & 0x07;
    for (int k = 1; k < length; ++k) c = (c << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3F);
    out.push_back(c);
    i += length;
  }
  return out;
}

TEST(Alphabet, KanaAlphabetHoldsHiraganaKatakanaAndLongVowelMark) {
  const auto chars = code_points(kana_alphabet());
  EXPECT_EQ(chars.size(), 86u + 90u + 1u);
  EXPECT_EQ(chars.front(), U'ぁ');
  EXPECT_NE(std::find(chars.begin(), chars.end(), U'ヺ'), chars.end());
  EXPECT_EQ(chars.back(), U'ー');
}

TEST(Alphabet, RanksKanjiByDictionaryEntriesThenCodePoint) {
  testing::ScratchDir dir("tsumugi-ipadic");
  // EUC-JP: 日 = C6 FC, 本 = CB DC, 人 = BF CD. 日 is in three entries, 本 and 人 in one each.
  std::ofstream(dir / "Noun.csv", std::ios::binary) << "\xC6\xFC\xCB\xDC,1285,1285,5000,noun\n"
                                                       "\xC6\xFC,1285,1285,5000,noun\n"
                                                       "\xBF\xCD\xC6\xFC,1285,1285,5000,noun\n"
                                                       "abc,1285,1285,5000,noun\n";
  EXPECT_EQ(code_points(common_kanji_from_ipadic(dir.str(), 2)), (std::vector<char32_t>{U'日', U'人'}));
  EXPECT_EQ(code_points(common_kanji_from_ipadic(dir.str(), 10)).size(), 3u);
}

TEST(Alphabet, NamesAFolderWithoutDictionary) {
  testing::ScratchDir dir("tsumugi-ipadic-empty");
  try {
    common_kanji_from_ipadic(dir.str(), 10);
    FAIL() << "no error";
  } catch (const IOError& e) {
    EXPECT_NE(std::string(e.what()).find(dir.str()), std::string::npos) << e.what();
  }
}

TEST(Alphabet, DebianIpadicGivesTheRequestedNumberOfCommonKanji) {
  if (!std::filesystem::exists(std::string(kDebianIpadicDir) + "/Noun.csv")) {
    GTEST_SKIP() << "mecab-ipadic is not installed";
  }
  const auto kanji = code_points(common_kanji_from_ipadic(kDebianIpadicDir, 2500));
  ASSERT_EQ(kanji.size(), 2500u);
  // Everyday kanji are among them; all are CJK ideographs.
  for (char32_t c : {U'日', U'人', U'大', U'学', U'東'}) {
    EXPECT_NE(std::find(kanji.begin(), kanji.end(), c), kanji.end()) << static_cast<uint32_t>(c);
  }
  for (char32_t c : kanji) EXPECT_TRUE((c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF));
}

}  // namespace
}  // namespace tsumugi
