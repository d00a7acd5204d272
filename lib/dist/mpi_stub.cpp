// Built instead of mpi_group.cpp when TSUMUGI_MPI is off: a single process, no MPI.
#include <tsumugi/dist/process_group.h>

#include <cstdlib>

#include "core/check.h"
#include "launch.h"

namespace tsumugi {

std::shared_ptr<ProcessGroup> mpi_world() {
  TSU_FAIL(NotImplementedError, "[mpi] this build of tsumugi has no MPI support (TSUMUGI_MPI=OFF)");
}
ProcessInfo process_info() { return {}; }
int job_rank() { return job_rank_from_environment(); }
void abort_job(int code) { std::exit(code); }
void shutdown_distributed() {}

}  // namespace tsumugi
