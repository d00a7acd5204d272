#pragma once
// Internal: pulls one string field out of a one-line JSON object, without building a DOM.
// Prep reads every JSON line of a corpus; a full parser would cost more than the tokenizer saves.
#include <string>
#include <string_view>

namespace tsumugi::data_internal {

/// Decodes the string value of top-level key `field` of the JSON object in `line` into `out`.
/// Returns an empty string on success, else what is wrong ("not a JSON object", "no string field
/// \"text\"", "invalid JSON at byte 12", "invalid \\u escape at byte 30").
std::string extract_json_string_field(std::string_view line, std::string_view field, std::string& out);

}  // namespace tsumugi::data_internal
