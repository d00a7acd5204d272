#pragma once
/// Process groups: collectives between the processes of a job, one process per device. The local
/// backend is a group of one; the MPI backend moves CPU tensors (rank, world size and local rank
/// come from MPI); the NCCL backend moves CUDA tensors (built with TSUMUGI_CUDA and TSUMUGI_NCCL).
///
/// Every blocking collective is watched: one that has not completed after the group's timeout
/// ends the whole job (MPI) or aborts the communicator and throws DistError (NCCL), with a
/// message naming the rank, the operation and its sequence number.
#include <tsumugi/core/tensor.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace tsumugi {

enum class ReduceOp { sum, max, min };

/// A collective that failed or timed out, or a peer that is gone.
class DistError : public Error {
 public:
  using Error::Error;
};

/// Where this process sits in the job.
struct ProcessInfo {
  int rank = 0;         ///< in the whole job
  int world = 1;        ///< processes in the job
  int local_rank = 0;   ///< among the processes on this node (which GPU to take)
  int local_world = 1;  ///< processes on this node
};

/// Handle to an asynchronous operation.
class Work {
 public:
  virtual ~Work() = default;
  /// Blocks until the operation is complete; rethrows its error.
  virtual void wait() = 0;
};

/// One send or receive of a send_recv batch.
struct PeerOp {
  enum Kind : uint8_t { send, recv } kind;
  Tensor tensor;  ///< sent from, or received into (allocated, contiguous)
  int peer;
  int tag = 0;
};

class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// "local", "mpi", "nccl" or "mpi+nccl" (device_aware_group).
  virtual std::string backend() const = 0;

  /// In place: every rank ends with the reduction over all ranks (contiguous tensors).
  virtual void all_reduce(Tensor& tensor, ReduceOp op = ReduceOp::sum) = 0;
  /// In place, sum, bitwise identical on every rank and equal to the balanced binary tree over
  /// ranks ((r0 + r1) + (r2 + r3)) ...: recursive doubling with fixed partners. Size must be a
  /// power of two.
  virtual void all_reduce_tree(Tensor& tensor) = 0;
  /// input (size * n) -> output (n): rank r gets the reduction of every rank's chunk r.
  virtual void reduce_scatter(const Tensor& input, Tensor& output, ReduceOp op = ReduceOp::sum) = 0;
  /// input (n) -> output (size * n): chunk r is rank r's input.
  virtual void all_gather(const Tensor& input, Tensor& output) = 0;
  /// In place: every rank ends with root's tensor.
  virtual void broadcast(Tensor& tensor, int root) = 0;
  virtual void send(const Tensor& tensor, int dst, int tag = 0) = 0;
  virtual void recv(Tensor& tensor, int src, int tag = 0) = 0;
  virtual void barrier() = 0;
  /// Splits the group: ranks with the same color form a new group, ordered by key. Collective.
  virtual std::shared_ptr<ProcessGroup> split(int color, int key) = 0;
  /// Starts an all-reduce that a communication thread carries out; `tensor` must stay alive and
  /// untouched until wait() returns.
  virtual std::shared_ptr<Work> all_reduce_async(Tensor tensor, ReduceOp op = ReduceOp::sum) = 0;
  /// Non-blocking point-to-point (pipeline stages): they return at once; `tensor` must stay alive
  /// and untouched until wait() returns, and wait() is watched by the timeout like a blocking
  /// collective. Messages between two ranks with the same tag arrive in the order sent. The MPI
  /// backend has them; a backend without them throws NotImplementedError.
  virtual std::shared_ptr<Work> send_async(Tensor tensor, int dst, int tag = 0);
  virtual std::shared_ptr<Work> recv_async(Tensor tensor, int src, int tag = 0);
  /// Runs the sends and receives of `ops` together and returns when all have completed, watched
  /// by the timeout. Being posted together, a send and a receive of one batch never wait on each
  /// other: a pipeline stage sends one message and receives the next in one batch
  /// (pipeline_exchanges). Messages between two ranks arrive in the order posted. The default
  /// posts each with send_async or recv_async and waits for all; the NCCL backend runs the batch
  /// as one ncclGroupStart/ncclGroupEnd. All tensors of a batch are on one device.
  virtual void send_recv(const std::vector<PeerOp>& ops);

  /// How long a collective may take before the job is ended (default 600 s, or
  /// TSUMUGI_COLLECTIVE_TIMEOUT seconds from the environment).
  void set_timeout(std::chrono::milliseconds timeout) { timeout_ = timeout; }
  std::chrono::milliseconds timeout() const { return timeout_; }

 protected:
  std::chrono::milliseconds timeout_ = default_timeout();
  static std::chrono::milliseconds default_timeout();
};

/// A group of one process: every collective is the identity.
std::shared_ptr<ProcessGroup> local_group();
/// True when this process was started by mpirun/srun (Open MPI, MPICH or PMIx environment).
bool launched_with_mpi();
/// All processes of the job over MPI (initialises MPI with thread support on first use).
/// Throws NotImplementedError in a build without MPI.
std::shared_ptr<ProcessGroup> mpi_world();
/// True when this build has the NCCL process group (TSUMUGI_CUDA and TSUMUGI_NCCL, NCCL found).
bool nccl_built();
/// An NCCL communicator over the same ranks as `bootstrap` (an MPI or local group, which carries
/// the ncclUniqueId from its rank 0), on CUDA device `device` (one device per rank, usually
/// cuda:<local rank>). Collective over `bootstrap`; the group takes its timeout. Its collectives
/// take contiguous tensors on `device` and run on tsumugi's stream for that device; blocking ones
/// return when the device has finished them. Reductions: f32, f64, bf16, f16, i32, i64, u8, u32.
/// send/recv ignore `tag`: NCCL matches the messages between two ranks in the order posted.
/// all_reduce_async runs on a communication stream; Work::wait makes tsumugi's stream wait for it
/// without blocking the host. Throws NotImplementedError in a build without NCCL, ValueError for a
/// device that is not a visible CUDA device.
std::shared_ptr<ProcessGroup> nccl_group(std::shared_ptr<ProcessGroup> bootstrap, Device device);
/// One group over two transports with the same ranks: CPU tensors go through `host` (MPI),
/// device tensors through `device` (NCCL); barrier() is the host's, split() splits both. This is
/// how a multi-GPU job keeps its scalars and flags on MPI and its gradients on NCCL. backend()
/// names both ("mpi+nccl"); the timeout set on this group applies to both.
std::shared_ptr<ProcessGroup> device_aware_group(std::shared_ptr<ProcessGroup> host,
                                                 std::shared_ptr<ProcessGroup> device);
/// `group` extended to device tensors: each is copied to host memory, moved by `group`, and
/// copied back (receives and async all-reduces on wait()); CPU tensors go straight through.
/// Slower than NCCL, but several ranks may share a GPU. backend(): "<group's>+host". The trainer
/// moves a pipeline's activations this way when its stages share GPUs.
std::shared_ptr<ProcessGroup> host_staged_group(std::shared_ptr<ProcessGroup> group);
/// The job's group: mpi_world() under mpirun, else local_group().
std::shared_ptr<ProcessGroup> default_group();
/// Rank, world size and node-local rank (MPI_Comm_split_type over shared memory).
ProcessInfo process_info();
/// This process's rank in the job without any communication (safe in error paths): from MPI
/// when it is initialised, else from the launcher's environment, else 0.
int job_rank();
/// Ends every process of the job with `code` (MPI_Abort under MPI, else exit). For a tool's main
/// after it printed the error; the library itself never calls this.
[[noreturn]] void abort_job(int code);
/// Finalises MPI if it was initialised (call before a normal exit).
void shutdown_distributed();

}  // namespace tsumugi
