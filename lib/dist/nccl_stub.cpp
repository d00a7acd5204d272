// Built instead of nccl_group.cpp when NCCL is not built (no CUDA, TSUMUGI_NCCL=OFF or no NCCL found).
#include <tsumugi/dist/process_group.h>

#include "core/check.h"

namespace tsumugi {

bool nccl_built() { return false; }

std::shared_ptr<ProcessGroup> nccl_group(std::shared_ptr<ProcessGroup>, Device) {
  TSU_FAIL(NotImplementedError,
           "[nccl] this build of tsumugi has no NCCL support (it needs TSUMUGI_CUDA, TSUMUGI_NCCL and NCCL found)");
}

}  // namespace tsumugi
