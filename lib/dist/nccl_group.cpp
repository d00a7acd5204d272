// The NCCL process group for CUDA tensors.
//
// One communicator per group, on one device. Blocking collectives are queued on tsumugi's stream
// for that device (lib/core/cuda/runtime.h), so they are ordered after the kernels that produced
// their inputs without any event; the host then waits for an event recorded after them, polling
// the communicator for asynchronous errors, and past the group's timeout aborts the communicator
// and throws DistError naming the rank, the operation and its sequence number. Asynchronous
// all-reduces go on a communication stream of the group's own; NCCL serialises the operations of
// one communicator across streams in the order they were issued, which is the same on every rank.
#include <tsumugi/core/autograd.h>
#include <tsumugi/core/ops.h>
#include <tsumugi/dist/process_group.h>

#include <nccl.h>

#include <cstring>
#include <thread>

#include "core/check.h"
#include "core/cuda/runtime.h"

namespace tsumugi {
namespace {

using Clock = std::chrono::steady_clock;

void check_nccl(ncclResult_t result, const char* op, int rank, ncclComm_t comm = nullptr) {
  if (result == ncclSuccess) return;
  const char* detail = comm != nullptr ? ncclGetLastError(comm) : "";
  TSU_FAIL(DistError, "[{}] rank {}: NCCL error: {}{}{}", op, rank, ncclGetErrorString(result),
           detail != nullptr && *detail != '\0' ? ": " : "", detail != nullptr ? detail : "");
}

// The element type NCCL reduces; data movement (gather, broadcast, send) goes as bytes.
ncclDataType_t nccl_reduce_type(DType dtype, const char* op) {
  switch (dtype) {
    case DType::f32: return ncclFloat32;
    case DType::f64: return ncclFloat64;
    case DType::bf16: return ncclBfloat16;
    case DType::f16: return ncclFloat16;
    case DType::i32: return ncclInt32;
    case DType::i64: return ncclInt64;
    case DType::u8: return ncclUint8;
    case DType::u32: return ncclUint32;
    default: break;
  }
  TSU_FAIL(ValueError, "[{}] NCCL cannot reduce {} tensors (use f32, f64, bf16, f16, i32, i64, u8 or u32)", op,
           dtype_name(dtype));
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return ncclSum;
    case ReduceOp::max: return ncclMax;
    case ReduceOp::min: return ncclMin;
  }
  return ncclSum;
}

// True once the work before `event` has finished; throws Error for a failed device.
bool event_done(cudaEvent_t event) {
  const cudaError_t status = cudaEventQuery(event);
  if (status == cudaSuccess) return true;
  if (status != cudaErrorNotReady) TSU_CUDA_CHECK(status);
  cudaGetLastError();  // "not ready" must not surface later as a kernel launch's error
  return false;
}

std::string seconds_str(std::chrono::milliseconds timeout) { return fmt::format("{:g}", timeout.count() / 1000.0); }

class NcclGroup;

// An all-reduce queued on the communication stream; `done_` is recorded after it.
class NcclWork : public Work {
 public:
  NcclWork(std::shared_ptr<NcclGroup> group, Tensor tensor, cudaEvent_t done, uint64_t sequence)
      : group_(std::move(group)), tensor_(std::move(tensor)), done_(done), sequence_(sequence), started_(Clock::now()) {}
  ~NcclWork() override;
  void wait() override;

 private:
  void order_after();

  std::shared_ptr<NcclGroup> group_;
  Tensor tensor_;  // kept alive: its memory must not be reused while the all-reduce may still read it
  cudaEvent_t done_;
  uint64_t sequence_;
  Clock::time_point started_;
  bool ordered_ = false;
};

class NcclGroup : public ProcessGroup, public std::enable_shared_from_this<NcclGroup> {
 public:
  NcclGroup(ncclComm_t comm, Device device, std::chrono::milliseconds timeout) : comm_(comm), device_(device) {
    timeout_ = timeout;
    cuda::set_device(device_.index);
    check_nccl(ncclCommUserRank(comm_, &rank_), "nccl", rank_, comm_);
    check_nccl(ncclCommCount(comm_, &size_), "nccl", rank_, comm_);
    TSU_CUDA_CHECK(cudaStreamCreateWithFlags(&comm_stream_, cudaStreamNonBlocking));
    TSU_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    TSU_CUDA_CHECK(cudaEventCreateWithFlags(&inputs_ready_, cudaEventDisableTiming));
  }
  ~NcclGroup() override {
    // No throwing here: errors on the way out are not reported.
    cudaSetDevice(device_.index);
    if (comm_ != nullptr) ncclCommDestroy(comm_);
    cudaEventDestroy(inputs_ready_);
    cudaEventDestroy(done_);
    cudaStreamDestroy(comm_stream_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }
  Device device() const { return device_; }

  void all_reduce(Tensor& t, ReduceOp op) override {
    check_tensor(t, "all_reduce");
    const ncclDataType_t type = nccl_reduce_type(t.dtype(), "all_reduce");
    const uint64_t sequence = begin("all_reduce");
    check_nccl(ncclAllReduce(t.data_ptr(), t.data_ptr(), count(t), type, nccl_op(op), comm_, stream()), "all_reduce",
               rank_, comm_);
    complete("all_reduce", sequence);
  }

  void all_reduce_tree(Tensor& t) override {
    check_tensor(t, "all_reduce_tree");
    TSU_CHECK((size_ & (size_ - 1)) == 0, ValueError,
              "[all_reduce_tree] deterministic reduction needs a power-of-two group, not {}", size_);
    const uint64_t sequence = begin("all_reduce_tree");
    if (!is_floating(t.dtype())) {
      // Integer sums do not depend on the order: NCCL's own all-reduce gives the same bits.
      check_nccl(ncclAllReduce(t.data_ptr(), t.data_ptr(), count(t), nccl_reduce_type(t.dtype(), "all_reduce_tree"),
                               ncclSum, comm_, stream()),
                 "all_reduce_tree", rank_, comm_);
      complete("all_reduce_tree", sequence);
      return;
    }
    NoGradGuard no_grad;
    Tensor received = empty_like(t);  // on the device's stream, like every step below
    for (int distance = 1; distance < size_; distance *= 2) {
      const int partner = rank_ ^ distance;
      check_nccl(ncclGroupStart(), "all_reduce_tree", rank_, comm_);
      check_nccl(ncclSend(t.data_ptr(), t.nbytes(), ncclUint8, partner, comm_, stream()), "all_reduce_tree", rank_,
                 comm_);
      check_nccl(ncclRecv(received.data_ptr(), received.nbytes(), ncclUint8, partner, comm_, stream()),
                 "all_reduce_tree", rank_, comm_);
      check_nccl(ncclGroupEnd(), "all_reduce_tree", rank_, comm_);
      // IEEE addition is commutative, so both partners compute the same bits for their pair; the
      // lower rank's operand goes first only to match the MPI backend's expression.
      t.copy_(rank_ < partner ? t + received : received + t);
    }
    complete("all_reduce_tree", sequence);
  }

  void reduce_scatter(const Tensor& input, Tensor& output, ReduceOp op) override {
    check_tensor(input, "reduce_scatter");
    check_tensor(output, "reduce_scatter");
    check_same_dtype(input, output, "reduce_scatter");
    TSU_CHECK(input.numel() == output.numel() * size_, ValueError,
              "[reduce_scatter] input has {} elements; expected {} x {}", input.numel(), size_, output.numel());
    const ncclDataType_t type = nccl_reduce_type(input.dtype(), "reduce_scatter");
    const uint64_t sequence = begin("reduce_scatter");
    check_nccl(ncclReduceScatter(input.data_ptr(), output.data_ptr(), count(output), type, nccl_op(op), comm_, stream()),
               "reduce_scatter", rank_, comm_);
    complete("reduce_scatter", sequence);
  }

  void all_gather(const Tensor& input, Tensor& output) override {
    check_tensor(input, "all_gather");
    check_tensor(output, "all_gather");
    check_same_dtype(input, output, "all_gather");
    TSU_CHECK(output.numel() == input.numel() * size_, ValueError,
              "[all_gather] output has {} elements; expected {} x {}", output.numel(), size_, input.numel());
    const uint64_t sequence = begin("all_gather");
    check_nccl(ncclAllGather(input.data_ptr(), output.data_ptr(), input.nbytes(), ncclUint8, comm_, stream()),
               "all_gather", rank_, comm_);
    complete("all_gather", sequence);
  }

  void broadcast(Tensor& t, int root) override {
    check_tensor(t, "broadcast");
    check_peer(root, "broadcast");
    const uint64_t sequence = begin("broadcast");
    check_nccl(ncclBroadcast(t.data_ptr(), t.data_ptr(), t.nbytes(), ncclUint8, root, comm_, stream()), "broadcast",
               rank_, comm_);
    complete("broadcast", sequence);
  }

  void send(const Tensor& t, int dst, int) override {
    check_tensor(t, "send");
    check_peer(dst, "send");
    TSU_CHECK(dst != rank_, ValueError, "[send] rank {} cannot send to itself over NCCL", rank_);
    const uint64_t sequence = begin("send");
    check_nccl(ncclSend(t.data_ptr(), t.nbytes(), ncclUint8, dst, comm_, stream()), "send", rank_, comm_);
    complete("send", sequence);
  }

  void recv(Tensor& t, int src, int) override {
    check_tensor(t, "recv");
    check_peer(src, "recv");
    TSU_CHECK(src != rank_, ValueError, "[recv] rank {} cannot receive from itself over NCCL", rank_);
    const uint64_t sequence = begin("recv");
    check_nccl(ncclRecv(t.data_ptr(), t.nbytes(), ncclUint8, src, comm_, stream()), "recv", rank_, comm_);
    complete("recv", sequence);
  }

  void send_recv(const std::vector<PeerOp>& ops) override {
    for (const PeerOp& op : ops) {
      check_tensor(op.tensor, "send_recv");
      check_peer(op.peer, "send_recv");
      TSU_CHECK(op.peer != rank_, ValueError, "[send_recv] rank {} cannot send to or receive from itself over NCCL",
                rank_);
    }
    if (ops.empty()) return;
    const uint64_t sequence = begin("send_recv");
    // One group: NCCL starts every send and receive together, so none waits behind another.
    // The group is always closed, also after a failed call inside it.
    ncclResult_t result = ncclGroupStart();
    for (const PeerOp& op : ops) {
      if (result != ncclSuccess) break;
      result = op.kind == PeerOp::send
                   ? ncclSend(op.tensor.data_ptr(), op.tensor.nbytes(), ncclUint8, op.peer, comm_, stream())
                   : ncclRecv(op.tensor.data_ptr(), op.tensor.nbytes(), ncclUint8, op.peer, comm_, stream());
    }
    const ncclResult_t ended = ncclGroupEnd();
    check_nccl(result != ncclSuccess ? result : ended, "send_recv", rank_, comm_);
    complete("send_recv", sequence);
  }

  void barrier() override {
    // NCCL has no barrier: an all-reduce of one element that every rank waits for.
    const uint64_t sequence = begin("barrier");
    if (!barrier_buffer_.defined()) barrier_buffer_ = zeros({1}, {.dtype = DType::f32, .device = device_});
    check_nccl(ncclAllReduce(barrier_buffer_.data_ptr(), barrier_buffer_.data_ptr(), 1, ncclFloat32, ncclSum, comm_,
                             stream()),
               "barrier", rank_, comm_);
    complete("barrier", sequence);
  }

  std::shared_ptr<ProcessGroup> split(int color, int key) override {
    TSU_CHECK(color >= 0, ValueError, "[split] color must be non-negative, not {}", color);
    begin("split");
    ncclComm_t sub = nullptr;
    // Blocking on the host until every rank has called it (NCCL gives no way to watch it).
    check_nccl(ncclCommSplit(comm_, color, key, &sub, nullptr), "split", rank_, comm_);
    return std::make_shared<NcclGroup>(sub, device_, timeout_);
  }

  std::shared_ptr<Work> all_reduce_async(Tensor t, ReduceOp op) override {
    check_tensor(t, "all_reduce_async");
    const ncclDataType_t type = nccl_reduce_type(t.dtype(), "all_reduce_async");
    check_alive("all_reduce_async");
    cuda::set_device(device_.index);
    const uint64_t sequence = ++async_sequence_;
    // The communication stream starts once tsumugi's stream has produced the tensor.
    TSU_CUDA_CHECK(cudaEventRecord(inputs_ready_, stream()));
    TSU_CUDA_CHECK(cudaStreamWaitEvent(comm_stream_, inputs_ready_, 0));
    check_nccl(ncclAllReduce(t.data_ptr(), t.data_ptr(), count(t), type, nccl_op(op), comm_, comm_stream_),
               "all_reduce_async", rank_, comm_);
    cudaEvent_t done = nullptr;
    TSU_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    TSU_CUDA_CHECK(cudaEventRecord(done, comm_stream_));
    return std::make_shared<NcclWork>(shared_from_this(), std::move(t), done, sequence);
  }

  /// Throws DistError when the communicator reports an asynchronous error (and aborts it).
  void check_async_error(const char* op, uint64_t sequence) {
    ncclResult_t async = ncclSuccess;
    check_nccl(ncclCommGetAsyncError(comm_, &async), op, rank_, comm_);
    if (async == ncclSuccess || async == ncclInProgress) return;
    const char* last = ncclGetLastError(comm_);
    const std::string detail = last != nullptr ? last : "";
    abort();
    TSU_FAIL(DistError, "[{}] rank {}: collective {} #{} failed: NCCL error: {}{}{}; the NCCL communicator was aborted",
             op, rank_, op, sequence, ncclGetErrorString(async), detail.empty() ? "" : ": ", detail);
  }

  /// Aborts the communicator and throws DistError: `op` #`sequence` outlived the timeout.
  [[noreturn]] void fail_timeout(const char* op, uint64_t sequence) {
    abort();
    TSU_FAIL(DistError,
             "[{}] rank {}: collective {} #{} did not complete within {} s (a rank stalled, hung or died); the NCCL "
             "communicator was aborted",
             op, rank_, op, sequence, seconds_str(timeout_));
  }

  void check_alive(const char* op) const {
    TSU_CHECK(comm_ != nullptr, DistError, "[{}] rank {}: the NCCL communicator was aborted after an earlier error", op,
              rank_);
  }

 private:
  cudaStream_t stream() const { return cuda::stream(device_.index); }
  static size_t count(const Tensor& t) { return static_cast<size_t>(t.numel()); }

  void check_tensor(const Tensor& t, const char* op) const {
    TSU_CHECK(t.defined() && t.device() == device_ && t.is_contiguous(), ValueError,
              "[{}] the NCCL backend needs contiguous tensors on {} (got {} on {})", op, device_.str(),
              t.defined() ? shape_str(t.shape()) : "an undefined tensor", t.defined() ? t.device().str() : "-");
  }
  static void check_same_dtype(const Tensor& input, const Tensor& output, const char* op) {
    TSU_CHECK(input.dtype() == output.dtype(), ValueError, "[{}] input is {} but output is {}", op,
              dtype_name(input.dtype()), dtype_name(output.dtype()));
  }
  void check_peer(int peer, const char* op) const {
    TSU_CHECK(peer >= 0 && peer < size_, DistError, "[{}] rank {} does not exist in a group of {}", op, peer, size_);
  }

  // Every blocking operation: the communicator is usable, the device current; its sequence number.
  uint64_t begin(const char* op) {
    check_alive(op);
    cuda::set_device(device_.index);
    return ++sequence_;
  }

  // Waits on the host until the device has finished everything queued so far on tsumugi's stream.
  void complete(const char* op, uint64_t sequence) {
    TSU_CUDA_CHECK(cudaEventRecord(done_, stream()));
    const Clock::time_point deadline = Clock::now() + timeout_;
    for (int polls = 0;; ++polls) {
      if (event_done(done_)) return;
      check_async_error(op, sequence);
      if (Clock::now() > deadline) fail_timeout(op, sequence);
      // Spin briefly for small messages, then stop burning a core.
      if (polls < 2000) std::this_thread::yield();
      else std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

  void abort() {
    if (comm_ == nullptr) return;
    ncclCommAbort(comm_);
    comm_ = nullptr;
  }

  ncclComm_t comm_;
  Device device_;
  int rank_ = 0, size_ = 1;
  cudaStream_t comm_stream_ = nullptr;
  cudaEvent_t done_ = nullptr;          // after the latest blocking operation
  cudaEvent_t inputs_ready_ = nullptr;  // tsumugi's stream, before the latest asynchronous one
  Tensor barrier_buffer_;               // (1) f32 on device_
  uint64_t sequence_ = 0;
  uint64_t async_sequence_ = 0;
};

// tsumugi's stream waits for the all-reduce: later kernels see the result, and the caching
// allocator cannot hand the tensor's memory to a later kernel before NCCL is done with it.
void NcclWork::order_after() {
  if (ordered_) return;
  ordered_ = true;
  cuda::set_device(group_->device().index);
  TSU_CUDA_CHECK(cudaStreamWaitEvent(cuda::stream(group_->device().index), done_, 0));
}

void NcclWork::wait() {
  group_->check_alive("all_reduce_async");
  order_after();
  // Not blocking the host: a failure already reported, or an all-reduce past its time, is an
  // error now; one that hangs later holds up the next blocking collective, whose timeout names it.
  group_->check_async_error("all_reduce_async", sequence_);
  if (Clock::now() - started_ > group_->timeout() && !event_done(done_))
    group_->fail_timeout("all_reduce_async", sequence_);
}

NcclWork::~NcclWork() {
  try {
    order_after();
  } catch (const Error&) {
    // Destructors do not throw; a broken device reports itself at the next operation.
  }
  cudaEventDestroy(done_);
}

}  // namespace

bool nccl_built() { return true; }

std::shared_ptr<ProcessGroup> nccl_group(std::shared_ptr<ProcessGroup> bootstrap, Device device) {
  TSU_CHECK(bootstrap != nullptr, ValueError, "[nccl] the bootstrap group is null");
  TSU_CHECK(device.is_cuda(), ValueError, "[nccl] the NCCL group needs a CUDA device, not {}", device.str());
  const int devices = cuda_device_count();
  TSU_CHECK(device.index < devices, ValueError, "[nccl] {} is not a visible CUDA device ({} visible)", device.str(),
            devices);
  const int rank = bootstrap->rank(), size = bootstrap->size();
  // Rank 0 makes the id; the bootstrap group (MPI, or a group of one) carries it to the others.
  ncclUniqueId id;
  Tensor id_bytes = zeros({static_cast<int64_t>(sizeof(id))}, {.dtype = DType::u8});
  if (rank == 0) {
    check_nccl(ncclGetUniqueId(&id), "nccl", rank);
    std::memcpy(id_bytes.data_ptr(), &id, sizeof(id));
  }
  bootstrap->broadcast(id_bytes, 0);
  std::memcpy(&id, id_bytes.data_ptr(), sizeof(id));
  cuda::set_device(device.index);
  ncclComm_t comm = nullptr;
  check_nccl(ncclCommInitRank(&comm, size, id, rank), "nccl", rank);
  return std::make_shared<NcclGroup>(comm, device, bootstrap->timeout());
}

}  // namespace tsumugi
