#pragma once
// Internal: UTF-8 validation and a stable 64-bit hash of text.
#include <cstdint>
#include <cstring>
#include <string_view>

namespace tsumugi::data_internal {

/// Offset of the first byte that does not start or continue a valid UTF-8 character (RFC 3629:
/// no overlong forms, no surrogates, nothing above U+10FFFF), or npos when `text` is valid.
inline size_t find_invalid_utf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    // Eight ASCII bytes at a time: most Japanese corpora still hold long ASCII runs (markup, code).
    if (i + 8 <= n) {
      uint64_t word;
      std::memcpy(&word, s + i, 8);
      if ((word & 0x8080808080808080ULL) == 0) {
        i += 8;
        continue;
      }
    }
    const unsigned char lead = s[i];
    if (lead < 0x80) {
      ++i;
      continue;
    }
    size_t length;
    unsigned char low = 0x80, high = 0xBF;  // allowed range of the second byte
    if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3;
      if (lead == 0xE0) low = 0xA0;   // overlong
      if (lead == 0xED) high = 0x9F;  // surrogates
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4;
      if (lead == 0xF0) low = 0x90;   // overlong
      if (lead == 0xF4) high = 0x8F;  // above U+10FFFF
    } else {
      return i;
    }
    if (i + length > n) return i;
    if (s[i + 1] < low || s[i + 1] > high) return i;
    for (size_t k = 2; k < length; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
    }
    i += length;
  }
  return std::string_view::npos;
}

/// A 64-bit hash of `text` that is the same on every machine and every run (splits use it).
inline uint64_t stable_hash64(std::string_view text, uint64_t seed = 0x9E3779B97F4A7C15ULL) {
  auto mix = [](uint64_t x) {
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
  };
  uint64_t h = mix(seed ^ text.size());
  size_t i = 0;
  for (; i + 8 <= text.size(); i += 8) {
    uint64_t word = 0;
    for (int k = 0; k < 8; ++k) word |= uint64_t(static_cast<unsigned char>(text[i + k])) << (8 * k);
    h = mix(h ^ word) * 0x9E3779B97F4A7C15ULL;
  }
  uint64_t tail = 0;
  for (int k = 0; i + k < text.size(); ++k) tail |= uint64_t(static_cast<unsigned char>(text[i + k])) << (8 * k);
  return mix(h ^ tail ^ 0xFF51AFD7ED558CCDULL);
}

}  // namespace tsumugi::data_internal
