#pragma once
// Internal to tsumugi::dist.
namespace tsumugi {
/// The rank the launcher put in the environment (OMPI_COMM_WORLD_RANK, PMI_RANK, ...), or 0.
int job_rank_from_environment();
}  // namespace tsumugi
