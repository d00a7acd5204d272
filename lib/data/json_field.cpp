// A small JSON scanner: finds one top-level string field, skips every other value.
#include "json_field.h"

#include <cstring>

namespace tsumugi::data_internal {
namespace {

class Scanner {
 public:
  explicit Scanner(std::string_view text) : s_(text) {}

  void skip_space() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\r' || s_[pos_] == '\n')) ++pos_;
  }
  bool at_end() const { return pos_ >= s_.size(); }
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  bool consume(char c) {
    if (peek() != c) return false;
    ++pos_;
    return true;
  }
  std::string fail(const char* what) const { return std::string(what) + " at byte " + std::to_string(pos_ + 1); }

  // Reads a string starting at '"'; appends the decoded value to `out` when it is not null.
  std::string read_string(std::string* out) {
    if (!consume('"')) return fail("invalid JSON (expected a string)");
    while (true) {
      // Copy the run up to the next quote or backslash in one go.
      const size_t start = pos_;
      while (pos_ < s_.size() && s_[pos_] != '"' && s_[pos_] != '\\') {
        if (static_cast<unsigned char>(s_[pos_]) < 0x20) return fail("invalid JSON (control character in a string)");
        ++pos_;
      }
      if (out) out->append(s_.data() + start, pos_ - start);
      if (pos_ >= s_.size()) return fail("invalid JSON (unterminated string)");
      if (s_[pos_++] == '"') return {};
      if (pos_ >= s_.size()) return fail("invalid JSON (unterminated escape)");
      const char escape = s_[pos_++];
      char plain = 0;
      switch (escape) {
        case '"': plain = '"'; break;
        case '\\': plain = '\\'; break;
        case '/': plain = '/'; break;
        case 'b': plain = '\b'; break;
        case 'f': plain = '\f'; break;
        case 'n': plain = '\n'; break;
        case 'r': plain = '\r'; break;
        case 't': plain = '\t'; break;
        case 'u': {
          std::string error = read_unicode_escape(out);
          if (!error.empty()) return error;
          continue;
        }
        default: return fail("invalid JSON (unknown escape)");
      }
      if (out) out->push_back(plain);
    }
  }

  // Skips any JSON value. Iterative, with an explicit stack of open containers: a line of a
  // corpus may nest arrays a million deep, which must be an answer, not a stack overflow.
  std::string skip_value() {
    std::string open;  // the closing bracket of each container entered, innermost last
    while (true) {
      skip_space();
      const char c = peek();
      if (c == '{' || c == '[') {
        ++pos_;
        skip_space();
        const char close = c == '{' ? '}' : ']';
        if (!consume(close)) {
          open.push_back(close);
          if (close == '}') {
            std::string error = read_key();
            if (!error.empty()) return error;
          }
          continue;  // the container's first value
        }
      } else if (c == '"') {
        std::string error = read_string(nullptr);
        if (!error.empty()) return error;
      } else {
        std::string error = skip_literal();
        if (!error.empty()) return error;
      }
      // One value is complete: close the containers it ends, or go on to the next element.
      while (true) {
        if (open.empty()) return {};
        skip_space();
        if (consume(open.back())) {
          open.pop_back();
          continue;
        }
        if (!consume(',')) return fail("invalid JSON (expected ',')");
        if (open.back() == '}') {
          std::string error = read_key();
          if (!error.empty()) return error;
        }
        break;
      }
    }
  }

 private:
  // An object member's key and its ':'.
  std::string read_key() {
    skip_space();
    std::string error = read_string(nullptr);
    if (!error.empty()) return error;
    skip_space();
    if (!consume(':')) return fail("invalid JSON (expected ':')");
    return {};
  }

  // Numbers and literals: a run of their characters.
  std::string skip_literal() {
    const size_t start = pos_;
    while (pos_ < s_.size() && s_[pos_] != '\0' && std::strchr("+-0123456789.eEtruefalsn", s_[pos_]) != nullptr) ++pos_;
    const std::string_view token = s_.substr(start, pos_ - start);
    if (token.empty()) return fail("invalid JSON (expected a value)");
    if (token == "true" || token == "false" || token == "null") return {};
    if (token.front() == '-' || (token.front() >= '0' && token.front() <= '9')) return {};
    return fail("invalid JSON (unknown literal)");
  }

  bool read_hex4(uint32_t& value) {
    if (pos_ + 4 > s_.size()) return false;
    value = 0;
    for (int k = 0; k < 4; ++k) {
      const char h = s_[pos_++];
      value <<= 4;
      if (h >= '0' && h <= '9') value |= h - '0';
      else if (h >= 'a' && h <= 'f') value |= h - 'a' + 10;
      else if (h >= 'A' && h <= 'F') value |= h - 'A' + 10;
      else return false;
    }
    return true;
  }

  std::string read_unicode_escape(std::string* out) {
    uint32_t code;
    if (!read_hex4(code)) return fail("invalid \\u escape");
    if (code >= 0xDC00 && code <= 0xDFFF) return fail("invalid UTF-16 surrogate in \\u escape");
    if (code >= 0xD800 && code <= 0xDBFF) {
      uint32_t low;
      if (!consume('\\') || !consume('u') || !read_hex4(low) || low < 0xDC00 || low > 0xDFFF) {
        return fail("invalid UTF-16 surrogate in \\u escape");
      }
      code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
    }
    if (!out) return {};
    if (code < 0x80) {
      out->push_back(static_cast<char>(code));
    } else if (code < 0x800) {
      out->push_back(static_cast<char>(0xC0 | (code >> 6)));
      out->push_back(static_cast<char>(0x80 | (code & 0x3F)));
    } else if (code < 0x10000) {
      out->push_back(static_cast<char>(0xE0 | (code >> 12)));
      out->push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (code & 0x3F)));
    } else {
      out->push_back(static_cast<char>(0xF0 | (code >> 18)));
      out->push_back(static_cast<char>(0x80 | ((code >> 12) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (code & 0x3F)));
    }
    return {};
  }

  std::string_view s_;
  size_t pos_ = 0;
};

}  // namespace

std::string extract_json_string_field(std::string_view line, std::string_view field, std::string& out) {
  out.clear();
  Scanner scan(line);
  scan.skip_space();
  if (!scan.consume('{')) return "not a JSON object";
  bool found = false;
  std::string key;
  scan.skip_space();
  if (!scan.consume('}')) {
    while (true) {
      scan.skip_space();
      key.clear();
      std::string error = scan.read_string(&key);
      if (!error.empty()) return error;
      scan.skip_space();
      if (!scan.consume(':')) return scan.fail("invalid JSON (expected ':')");
      scan.skip_space();
      if (key == field && !found && scan.peek() == '"') {
        error = scan.read_string(&out);
        found = true;
      } else {
        error = scan.skip_value();
      }
      if (!error.empty()) return error;
      scan.skip_space();
      if (scan.consume('}')) break;
      if (!scan.consume(',')) return scan.fail("invalid JSON (expected ',' or '}')");
    }
  }
  scan.skip_space();
  if (!scan.at_end()) return scan.fail("invalid JSON (text after the object)");
  if (!found) return "no string field \"" + std::string(field) + "\"";
  return {};
}

}  // namespace tsumugi::data_internal
