// The one-field JSON scanner prep uses on every JSON line.
#include <gtest/gtest.h>

#include "data/json_field.h"

namespace tsumugi::data_internal {
namespace {

std::string field(std::string_view line, std::string_view name = "text") {
  std::string out;
  const std::string error = extract_json_string_field(line, name, out);
  return error.empty() ? out : "ERROR: " + error;
}

TEST(JsonField, ReadsTheFieldAndSkipsOtherValues) {
  EXPECT_EQ(field(R"({"id": 3, "meta": {"a": [1, 2, {"b": "x}"}], "c": null}, "text": "本文", "n": -1.5e3})"), "本文");
  EXPECT_EQ(field(R"(  {"text":"a"}  )"), "a");
  EXPECT_EQ(field(R"({"source": "x", "text": ""})"), "");
}

TEST(JsonField, DecodesEscapesAndSurrogatePairs) {
  EXPECT_EQ(field(R"({"text": "a\"b\\c\/d\n\t\r\b\f"})"), "a\"b\\c/d\n\t\r\b\f");
  EXPECT_EQ(field(R"({"text": "\u6771\u4eac \ud83d\ude00 \u00e9"})"), "東京 😀 é");
}

TEST(JsonField, ReportsWhatIsWrong) {
  EXPECT_EQ(field(R"([1, 2])"), "ERROR: not a JSON object");
  EXPECT_EQ(field(R"({"body": "x"})"), "ERROR: no string field \"text\"");
  EXPECT_EQ(field(R"({"text": 5})"), "ERROR: no string field \"text\"");
  EXPECT_NE(field(R"({"text": "abc)").find("unterminated"), std::string::npos);
  EXPECT_NE(field(R"({"text": "\ud800x"})").find("surrogate"), std::string::npos);
  EXPECT_NE(field(R"({"text": "a"} trailing)").find("text after the object"), std::string::npos);
  EXPECT_NE(field(R"({"text": "a" "b": 1})").find("expected ','"), std::string::npos);
  EXPECT_NE(field(R"({"text": "tab	inside"})").find("control character"), std::string::npos);
}

TEST(JsonField, SkipsValuesNestedAMillionDeepWithoutRecursion) {
  // A corpus line like this once overflowed the stack of the recursive skipper (fuzz_documents).
  const std::string deep(1000000, '[');
  const std::string closed = deep + std::string(1000000, ']');
  EXPECT_EQ(field(R"({"meta": )" + closed + R"(, "text": "x"})"), "x");
  EXPECT_NE(field(R"({"meta": )" + deep + R"(, "text": "x"})").find("invalid JSON"), std::string::npos);
  EXPECT_EQ(field(R"({"meta": [{"a": [{}, []]}, {"b": {"c": [1, "]"]}}], "text": "y"})"), "y");
  EXPECT_NE(field(R"({"meta": [1 2], "text": "y"})").find("expected ','"), std::string::npos);
}

TEST(JsonField, UsesAConfigurableFieldName) {
  EXPECT_EQ(field(R"({"text": "a", "content": "b"})", "content"), "b");
}

}  // namespace
}  // namespace tsumugi::data_internal
