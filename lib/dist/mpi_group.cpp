// The MPI process group for CPU tensors.
//
// MPI is initialised with MPI_THREAD_MULTIPLE: blocking collectives run on the calling thread
// over one communicator, asynchronous all-reduces on a communication thread over a duplicate
// of it, so the two streams never interleave on one communicator. A watchdog thread ends the
// job when a collective outlives the timeout.
#include <tsumugi/core/ops.h>
#include <tsumugi/dist/process_group.h>

#include <mpi.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>

#include "core/check.h"
#include "launch.h"

namespace tsumugi {
namespace {

void check_mpi(int code, const char* op, int rank) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  TSU_FAIL(DistError, "[{}] rank {}: MPI error: {}", op, rank, std::string(text, static_cast<size_t>(length)));
}

MPI_Datatype mpi_type(DType dtype, const char* op) {
  switch (dtype) {
    case DType::f32: return MPI_FLOAT;
    case DType::f64: return MPI_DOUBLE;
    case DType::i32: return MPI_INT32_T;
    case DType::i64: return MPI_INT64_T;
    case DType::u32: return MPI_UINT32_T;
    case DType::u16: case DType::bf16: case DType::f16: return MPI_UINT16_T;
    case DType::u8: case DType::boolean: return MPI_UINT8_T;
  }
  TSU_FAIL(ValueError, "[{}] unsupported dtype", op);
}

MPI_Op mpi_op(ReduceOp op, DType dtype, const char* name) {
  TSU_CHECK(dtype != DType::bf16 && dtype != DType::f16, ValueError,
            "[{}] MPI cannot reduce {} tensors; reduce in f32", name, dtype_name(dtype));
  switch (op) {
    case ReduceOp::sum: return MPI_SUM;
    case ReduceOp::max: return MPI_MAX;
    case ReduceOp::min: return MPI_MIN;
  }
  return MPI_SUM;
}

void check_cpu_contiguous(const Tensor& t, const char* op) {
  TSU_CHECK(t.device().is_cpu() && t.is_contiguous(), ValueError,
            "[{}] the MPI backend needs contiguous cpu tensors (got {} on {})", op, shape_str(t.shape()),
            t.device().str());
}

// Watches blocking collectives; ends the job when one outlives its timeout.
class Watchdog {
 public:
  static Watchdog& get() {
    static auto* watchdog = new Watchdog();  // never destroyed: threads may still report
    return *watchdog;
  }
  uint64_t begin(const std::string& op, int rank, uint64_t sequence, std::chrono::milliseconds timeout) {
    std::lock_guard lock(mutex_);
    const uint64_t id = next_id_++;
    active_.push_back({id, op, rank, sequence, std::chrono::steady_clock::now() + timeout, timeout});
    return id;
  }
  void end(uint64_t id) {
    std::lock_guard lock(mutex_);
    std::erase_if(active_, [id](const Entry& e) { return e.id == id; });
  }

 private:
  struct Entry {
    uint64_t id;
    std::string op;
    int rank;
    uint64_t sequence;
    std::chrono::steady_clock::time_point deadline;
    std::chrono::milliseconds timeout;
  };
  Watchdog() {
    std::thread([this] {
      for (;;) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        std::lock_guard lock(mutex_);
        const auto now = std::chrono::steady_clock::now();
        for (const Entry& e : active_) {
          if (now < e.deadline) continue;
          std::fprintf(stderr,
                       "tsumugi: rank %d: collective %s #%llu did not complete within %.0f s (a rank stalled, hung "
                       "or died); ending the job\n",
                       e.rank, e.op.c_str(), static_cast<unsigned long long>(e.sequence), e.timeout.count() / 1000.0);
          std::fflush(stderr);
          MPI_Abort(MPI_COMM_WORLD, 3);
        }
      }
    }).detach();
  }
  std::mutex mutex_;
  std::vector<Entry> active_;
  uint64_t next_id_ = 0;
};

class Watched {
 public:
  Watched(const std::string& op, int rank, uint64_t sequence, std::chrono::milliseconds timeout)
      : id_(Watchdog::get().begin(op, rank, sequence, timeout)) {}
  ~Watched() { Watchdog::get().end(id_); }

 private:
  uint64_t id_;
};

class AsyncWork : public Work {
 public:
  explicit AsyncWork(std::future<void> done) : done_(std::move(done)) {}
  void wait() override { done_.get(); }

 private:
  std::future<void> done_;
};

// A non-blocking send or receive: holds the tensor until the request completes.
class RequestWork : public Work {
 public:
  RequestWork(Tensor tensor, MPI_Request request, const char* op, int rank, uint64_t sequence,
              std::chrono::milliseconds timeout)
      : tensor_(std::move(tensor)), request_(request), op_(op), rank_(rank), sequence_(sequence), timeout_(timeout) {}
  void wait() override {
    if (request_ == MPI_REQUEST_NULL) return;
    Watched w(op_, rank_, sequence_, timeout_);
    check_mpi(MPI_Wait(&request_, MPI_STATUS_IGNORE), op_, rank_);
    tensor_ = Tensor();
  }

 private:
  Tensor tensor_;
  MPI_Request request_;
  const char* op_;
  int rank_;
  uint64_t sequence_;
  std::chrono::milliseconds timeout_;
};

// Runs tasks one after another on its own thread.
class CommThread {
 public:
  CommThread() : thread_([this] { loop(); }) {}
  ~CommThread() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  std::future<void> submit(std::function<void()> task) {
    std::packaged_task<void()> packaged(std::move(task));
    std::future<void> future = packaged.get_future();
    {
      std::lock_guard lock(mutex_);
      queue_.push_back(std::move(packaged));
    }
    cv_.notify_one();
    return future;
  }

 private:
  void loop() {
    for (;;) {
      std::packaged_task<void()> task;
      {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      task();
    }
  }
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::packaged_task<void()>> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

class MpiGroup : public ProcessGroup {
 public:
  explicit MpiGroup(MPI_Comm comm) : comm_(comm) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Comm_dup(comm_, &async_comm_);
  }
  ~MpiGroup() override {
    comm_thread_.reset();
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) {
      MPI_Comm_free(&async_comm_);
      if (comm_ != MPI_COMM_WORLD) MPI_Comm_free(&comm_);
    }
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }

  void all_reduce(Tensor& t, ReduceOp op) override {
    check_cpu_contiguous(t, "all_reduce");
    Watched w("all_reduce", rank_, ++sequence_, timeout_);
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, t.data_ptr(), static_cast<int>(t.numel()), mpi_type(t.dtype(), "all_reduce"),
                            mpi_op(op, t.dtype(), "all_reduce"), comm_),
              "all_reduce", rank_);
  }

  void all_reduce_tree(Tensor& t) override {
    check_cpu_contiguous(t, "all_reduce_tree");
    TSU_CHECK((size_ & (size_ - 1)) == 0, ValueError,
              "[all_reduce_tree] deterministic reduction needs a power-of-two group, not {}", size_);
    Watched w("all_reduce_tree", rank_, ++sequence_, timeout_);
    Tensor received = empty_like(t);
    for (int distance = 1; distance < size_; distance *= 2) {
      const int partner = rank_ ^ distance;
      check_mpi(MPI_Sendrecv(t.data_ptr(), static_cast<int>(t.numel()), mpi_type(t.dtype(), "all_reduce_tree"), partner,
                             1000 + distance, received.data_ptr(), static_cast<int>(t.numel()),
                             mpi_type(t.dtype(), "all_reduce_tree"), partner, 1000 + distance, comm_, MPI_STATUS_IGNORE),
                "all_reduce_tree", rank_);
      // IEEE addition is commutative, so both partners compute the same bits for their pair.
      t.copy_(rank_ < partner ? t + received : received + t);
    }
  }

  void reduce_scatter(const Tensor& input, Tensor& output, ReduceOp op) override {
    check_cpu_contiguous(input, "reduce_scatter");
    check_cpu_contiguous(output, "reduce_scatter");
    TSU_CHECK(input.numel() == output.numel() * size_, ValueError,
              "[reduce_scatter] input has {} elements; expected {} x {}", input.numel(), size_, output.numel());
    Watched w("reduce_scatter", rank_, ++sequence_, timeout_);
    check_mpi(MPI_Reduce_scatter_block(input.data_ptr(), output.data_ptr(), static_cast<int>(output.numel()),
                                       mpi_type(input.dtype(), "reduce_scatter"),
                                       mpi_op(op, input.dtype(), "reduce_scatter"), comm_),
              "reduce_scatter", rank_);
  }

  void all_gather(const Tensor& input, Tensor& output) override {
    check_cpu_contiguous(input, "all_gather");
    check_cpu_contiguous(output, "all_gather");
    TSU_CHECK(output.numel() == input.numel() * size_, ValueError,
              "[all_gather] output has {} elements; expected {} x {}", output.numel(), size_, input.numel());
    Watched w("all_gather", rank_, ++sequence_, timeout_);
    check_mpi(MPI_Allgather(input.data_ptr(), static_cast<int>(input.numel()), mpi_type(input.dtype(), "all_gather"),
                            output.data_ptr(), static_cast<int>(input.numel()), mpi_type(input.dtype(), "all_gather"), comm_),
              "all_gather", rank_);
  }

  void broadcast(Tensor& t, int root) override {
    check_cpu_contiguous(t, "broadcast");
    Watched w("broadcast", rank_, ++sequence_, timeout_);
    check_mpi(MPI_Bcast(t.data_ptr(), static_cast<int>(t.nbytes()), MPI_BYTE, root, comm_), "broadcast", rank_);
  }

  void send(const Tensor& t, int dst, int tag) override {
    check_cpu_contiguous(t, "send");
    Watched w("send", rank_, ++sequence_, timeout_);
    check_mpi(MPI_Send(t.data_ptr(), static_cast<int>(t.nbytes()), MPI_BYTE, dst, tag, comm_), "send", rank_);
  }

  void recv(Tensor& t, int src, int tag) override {
    check_cpu_contiguous(t, "recv");
    Watched w("recv", rank_, ++sequence_, timeout_);
    check_mpi(MPI_Recv(t.data_ptr(), static_cast<int>(t.nbytes()), MPI_BYTE, src, tag, comm_, MPI_STATUS_IGNORE), "recv",
              rank_);
  }

  std::shared_ptr<Work> send_async(Tensor t, int dst, int tag) override {
    check_cpu_contiguous(t, "send_async");
    MPI_Request request;
    check_mpi(MPI_Isend(t.data_ptr(), static_cast<int>(t.nbytes()), MPI_BYTE, dst, tag, comm_, &request), "send_async",
              rank_);
    return std::make_shared<RequestWork>(std::move(t), request, "send_async", rank_, ++sequence_, timeout_);
  }

  std::shared_ptr<Work> recv_async(Tensor t, int src, int tag) override {
    check_cpu_contiguous(t, "recv_async");
    MPI_Request request;
    check_mpi(MPI_Irecv(t.data_ptr(), static_cast<int>(t.nbytes()), MPI_BYTE, src, tag, comm_, &request), "recv_async",
              rank_);
    return std::make_shared<RequestWork>(std::move(t), request, "recv_async", rank_, ++sequence_, timeout_);
  }

  void barrier() override {
    Watched w("barrier", rank_, ++sequence_, timeout_);
    check_mpi(MPI_Barrier(comm_), "barrier", rank_);
  }

  std::shared_ptr<ProcessGroup> split(int color, int key) override {
    MPI_Comm sub;
    Watched w("split", rank_, ++sequence_, timeout_);
    check_mpi(MPI_Comm_split(comm_, color, key, &sub), "split", rank_);
    auto group = std::make_shared<MpiGroup>(sub);
    group->set_timeout(timeout_);
    return group;
  }

  std::shared_ptr<Work> all_reduce_async(Tensor t, ReduceOp op) override {
    check_cpu_contiguous(t, "all_reduce_async");
    if (!comm_thread_) comm_thread_ = std::make_unique<CommThread>();
    const uint64_t sequence = ++async_sequence_;
    return std::make_shared<AsyncWork>(comm_thread_->submit([this, t, op, sequence] {
      Watched w("all_reduce_async", rank_, sequence, timeout_);
      check_mpi(MPI_Allreduce(MPI_IN_PLACE, t.data_ptr(), static_cast<int>(t.numel()), mpi_type(t.dtype(), "all_reduce"),
                              mpi_op(op, t.dtype(), "all_reduce"), async_comm_),
                "all_reduce_async", rank_);
    }));
  }

 private:
  MPI_Comm comm_;
  MPI_Comm async_comm_;
  int rank_ = 0, size_ = 1;
  uint64_t sequence_ = 0;
  std::atomic<uint64_t> async_sequence_{0};
  std::unique_ptr<CommThread> comm_thread_;
};

std::once_flag mpi_once;
std::shared_ptr<ProcessGroup> world_group;

void init_mpi() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
    TSU_CHECK(provided >= MPI_THREAD_SERIALIZED, DistError,
              "[mpi] the MPI library gives thread level {}; tsumugi needs MPI_THREAD_SERIALIZED or better", provided);
  }
  // Errors come back as codes, so that they become exceptions naming the rank.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  world_group = std::make_shared<MpiGroup>(MPI_COMM_WORLD);
}

}  // namespace

std::shared_ptr<ProcessGroup> mpi_world() {
  std::call_once(mpi_once, init_mpi);
  return world_group;
}

ProcessInfo process_info() {
  if (!launched_with_mpi()) return {};
  auto world = mpi_world();
  ProcessInfo info{world->rank(), world->size(), 0, 1};
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, info.rank, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &info.local_rank);
  MPI_Comm_size(node, &info.local_world);
  MPI_Comm_free(&node);
  return info;
}

int job_rank() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    return rank;
  }
  return job_rank_from_environment();
}

void abort_job(int code) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

void shutdown_distributed() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) return;
  world_group.reset();
  MPI_Finalize();
}

}  // namespace tsumugi
