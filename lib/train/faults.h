#pragma once
// Internal: fault injection for the reliability tests. TSUMUGI_INJECT_FAULT="KIND@STEP" or
// "KIND@STEP:RANK" makes the trainer misbehave on purpose when it reaches step STEP (1-based)
// on rank RANK (every rank when omitted):
//   throw  raise an error (the job must end, naming the rank)
//   kill   SIGKILL this process (mpirun must end the job)
//   stall  stop making progress (the others' collective timeout must end the job)
//   nan    make the step's loss NaN (the on_nonfinite policy applies)
//   inf    make the step's loss +infinity (likewise)
//   spike  multiply the step's reported loss by 10 (the on_spike policy applies)
// Never set in normal use; documented in docs/reliability.md.
#include <cstdint>
#include <optional>
#include <string>

namespace tsumugi {

struct InjectedFault {
  std::string kind;
  int64_t step = 0;
  int rank = -1;  // -1: every rank
};

/// The fault requested through the environment, if any; throws ConfigError when malformed.
std::optional<InjectedFault> injected_fault();

/// Acts out `fault` when it is due (step and rank match); returns the kind for "nan", "inf" and "spike",
/// which the trainer applies to the step's loss, else "".
std::string trigger_fault(const std::optional<InjectedFault>& fault, int64_t step, int rank);

}  // namespace tsumugi
