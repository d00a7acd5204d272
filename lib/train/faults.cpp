#include "faults.h"

#include <tsumugi/train/config.h>

#include <signal.h>
#include <unistd.h>

#include <cstdlib>

#include "core/check.h"

namespace tsumugi {

std::optional<InjectedFault> injected_fault() {
  const char* env = std::getenv("TSUMUGI_INJECT_FAULT");
  if (env == nullptr || *env == '\0') return std::nullopt;
  const std::string text = env;
  InjectedFault fault;
  const auto at = text.find('@');
  const auto colon = text.find(':', at == std::string::npos ? 0 : at);
  try {
    TSU_CHECK(at != std::string::npos, ConfigError, "");
    fault.kind = text.substr(0, at);
    fault.step = std::stoll(text.substr(at + 1, colon == std::string::npos ? std::string::npos : colon - at - 1));
    if (colon != std::string::npos) fault.rank = std::stoi(text.substr(colon + 1));
  } catch (const std::exception&) {
    TSU_FAIL(ConfigError, "[fault] TSUMUGI_INJECT_FAULT='{}' is not KIND@STEP or KIND@STEP:RANK", text);
  }
  TSU_CHECK(fault.kind == "throw" || fault.kind == "kill" || fault.kind == "stall" || fault.kind == "nan" ||
                fault.kind == "inf" || fault.kind == "spike",
            ConfigError, "[fault] unknown fault kind '{}' (throw, kill, stall, nan, inf or spike)", fault.kind);
  return fault;
}

std::string trigger_fault(const std::optional<InjectedFault>& fault, int64_t step, int rank) {
  if (!fault || fault->step != step || (fault->rank >= 0 && fault->rank != rank)) return "";
  if (fault->kind == "throw") TSU_FAIL(Error, "[fault] injected error at step {}", step);
  if (fault->kind == "kill") ::kill(::getpid(), SIGKILL);
  if (fault->kind == "stall")
    for (;;) ::pause();
  return fault->kind == "nan" || fault->kind == "inf" || fault->kind == "spike" ? fault->kind : "";
}

}  // namespace tsumugi
