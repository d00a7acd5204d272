// The seed alphabet: kana, and the most common kanji counted in Debian's mecab-ipadic dictionary.
#include <iconv.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include <tsumugi/tokenizer/trainer.h>

#include "core/check.h"

namespace tsumugi {
namespace {

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

// EUC-JP bytes to UTF-8 through glibc's iconv.
std::string euc_jp_to_utf8(const std::string& input, const std::string& file) {
  iconv_t converter = iconv_open("UTF-8", "EUC-JP");
  TSU_CHECK(converter != reinterpret_cast<iconv_t>(-1), IOError, "[alphabet] iconv has no EUC-JP converter");
  std::string output(input.size() * 2 + 16, '\0');
  char* in = const_cast<char*>(input.data());
  size_t in_left = input.size();
  char* out = output.data();
  size_t out_left = output.size();
  const size_t result = iconv(converter, &in, &in_left, &out, &out_left);
  iconv_close(converter);
  TSU_CHECK(result != static_cast<size_t>(-1), IOError, "[alphabet] {}: not valid EUC-JP at byte {}", file,
            input.size() - in_left);
  output.resize(output.size() - out_left);
  return output;
}

// Decodes one UTF-8 character at text[i] (valid input from iconv); advances i.
char32_t next_code_point(std::string_view text, size_t& i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char lead = byte(i);
  int length = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
  if (i + length > text.size()) length = 1;
  char32_t c = length == 1 ? lead : length == 2 ? lead & 0x1F : length == 3 ? lead & 0x0F : lead & 0x07;
  for (int k = 1; k < length; ++k) c = (c << 6) | (byte(i + k) & 0x3F);
  i += length;
  return c;
}

bool is_kanji(char32_t c) { return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF); }

}  // namespace

std::string kana_alphabet() {
  std::string out;
  for (char32_t c = 0x3041; c <= 0x3096; ++c) append_utf8(out, c);  // hiragana
  for (char32_t c = 0x30A1; c <= 0x30FA; ++c) append_utf8(out, c);  // katakana
  append_utf8(out, 0x30FC);                                         // ー
  return out;
}

std::string common_kanji_from_ipadic(const std::string& ipadic_dir, int32_t count) {
  namespace fs = std::filesystem;
  TSU_CHECK(count >= 0, ValueError, "[alphabet] kanji count {} is negative", count);
  std::vector<fs::path> files;
  if (fs::is_directory(ipadic_dir)) {
    for (const auto& entry : fs::directory_iterator(ipadic_dir)) {
      if (entry.path().extension() == ".csv") files.push_back(entry.path());
    }
  }
  TSU_CHECK(!files.empty(), IOError,
            "[alphabet] {}: no MeCab IPADIC *.csv files (install Debian's mecab-ipadic, or pass another folder)",
            ipadic_dir);
  std::sort(files.begin(), files.end());
  // Each dictionary entry counts once for every kanji in its surface form (the first CSV field).
  std::unordered_map<char32_t, uint64_t> entries_with;
  for (const auto& path : files) {
    std::ifstream file(path, std::ios::binary);
    TSU_CHECK(file.good(), IOError, "[alphabet] {}: cannot open", path.string());
    std::stringstream raw;
    raw << file.rdbuf();
    const std::string text = euc_jp_to_utf8(raw.str(), path.string());
    std::string_view rest = text;
    while (!rest.empty()) {
      const size_t end = std::min(rest.find('\n'), rest.size());
      const std::string_view surface = rest.substr(0, std::min(rest.find(','), end));
      for (size_t i = 0; i < surface.size();) {
        const char32_t c = next_code_point(surface, i);
        if (is_kanji(c)) ++entries_with[c];
      }
      rest.remove_prefix(std::min(end + 1, rest.size()));
    }
  }
  std::vector<std::pair<char32_t, uint64_t>> ranked(entries_with.begin(), entries_with.end());
  std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  });
  if (ranked.size() > static_cast<size_t>(count)) ranked.resize(count);
  std::string out;
  for (const auto& [c, n] : ranked) append_utf8(out, c);
  return out;
}

}  // namespace tsumugi
