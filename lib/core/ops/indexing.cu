// Embedding lookup and its deterministic backward on CUDA. CPU reference: ops/indexing.cpp.
//
// Backward: several positions may hold the same id, so rows of dweight receive sums. Instead of
// float atomics (whose order changes from run to run) the ids are sorted stably (CUB radix sort of
// (id, position) pairs), and one block per run of equal ids adds that run's gradient rows in
// increasing position, in float, and writes its dweight row once (llm.c's bucket idea).
#include <cub/device/device_radix_sort.cuh>

#include "../cuda/device_math.cuh"
#include "indexing_cuda.h"

namespace tsumugi::cuda {
namespace {

constexpr int kThreads = 128;
// Gradient rows loaded ahead of the adds, so that a long run of one id keeps loads in flight.
constexpr int kRowsInFlight = 8;

template <class T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

template <class I>
__global__ void find_invalid_kernel(const I* ids, int64_t n, int64_t vocab, unsigned long long* first) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t v = static_cast<int64_t>(ids[i]);
    // Integer atomicMin: the smallest bad position wins whatever the order.
    if (v < 0 || v >= vocab) atomicMin(first, static_cast<unsigned long long>(i));
  }
}

// One block per output row (grid-stride); V is the widest unit that divides the row and the alignment.
template <class V, class I>
__global__ void gather_rows_kernel(const V* weight, const I* ids, V* out, int64_t n, int64_t row_units) {
  for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
    const V* src = weight + static_cast<int64_t>(ids[row]) * row_units;
    V* dst = out + row * row_units;
    for (int64_t c = threadIdx.x; c < row_units; c += blockDim.x) dst[c] = src[c];
  }
}

template <class I>
__global__ void make_sort_pairs_kernel(const I* ids, int32_t* keys, int32_t* positions, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    keys[i] = static_cast<int32_t>(ids[i]);
    positions[i] = static_cast<int32_t>(i);
  }
}

// grid (n, column chunks). Block x is sorted slot x; only the first slot of each run of equal ids
// works: it sums grad rows positions[x .. end) (increasing position) for its N * blockDim columns.
template <class T, int N>
__global__ void accumulate_runs_kernel(const T* grad, const int32_t* keys, const int32_t* positions, T* dweight,
                                       int n, int64_t d) {
  using A = acc_t<T>;
  const int first = blockIdx.x;
  const int32_t key = keys[first];
  if (first > 0 && keys[first - 1] == key) return;
  const int64_t c = (int64_t(blockIdx.y) * blockDim.x + threadIdx.x) * N;
  if (c >= d) return;
  // End of the run: keys are sorted, so binary-search the first slot holding a larger key.
  int lo = first + 1, hi = n;
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    if (keys[mid] == key) lo = mid + 1;
    else hi = mid;
  }
  const int end = lo;
  A acc[N];
#pragma unroll
  for (int e = 0; e < N; ++e) acc[e] = A(0);
  for (int p0 = first; p0 < end; p0 += kRowsInFlight) {
    Pack<T, N> rows[kRowsInFlight];
#pragma unroll
    for (int u = 0; u < kRowsInFlight; ++u)
      if (p0 + u < end) rows[u] = *reinterpret_cast<const Pack<T, N>*>(grad + int64_t(positions[p0 + u]) * d + c);
#pragma unroll
    for (int u = 0; u < kRowsInFlight; ++u)
      if (p0 + u < end) {
#pragma unroll
        for (int e = 0; e < N; ++e) acc[e] += load_as<A>(&rows[u].v[e]);
      }
  }
  Pack<T, N> out;
#pragma unroll
  for (int e = 0; e < N; ++e) store_from(&out.v[e], acc[e]);
  *reinterpret_cast<Pack<T, N>*>(dweight + int64_t(key) * d + c) = out;
}

template <class V, class I>
void launch_gather(const Tensor& weight, const Tensor& ids, const Tensor& out, int64_t row_bytes) {
  const int64_t n = ids.numel(), units = row_bytes / int64_t(sizeof(V));
  const int threads = units >= 128 ? 128 : 32;
  gather_rows_kernel<V, I><<<blocks_for(n, 1, 65535LL * 8), threads, 0, stream_of(out)>>>(
      ptr<const V>(weight), ptr<const I>(ids), ptr<V>(out), n, units);
  TSU_CUDA_CHECK_LAUNCH();
}

template <class T, int N>
void launch_accumulate(const Tensor& grad, const Tensor& sorted_keys, const Tensor& sorted_positions,
                       const Tensor& dweight, int n, int64_t d) {
  const int64_t chunk = int64_t(kThreads) * N;
  const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>((d + chunk - 1) / chunk));
  accumulate_runs_kernel<T, N><<<grid, kThreads, 0, stream_of(dweight)>>>(
      ptr<const T>(grad), ptr<const int32_t>(sorted_keys), ptr<const int32_t>(sorted_positions), ptr<T>(dweight), n,
      d);
  TSU_CUDA_CHECK_LAUNCH();
}

}  // namespace

int64_t first_invalid_index(const Tensor& ids, int64_t vocab) {
  const int64_t n = ids.numel();
  if (n == 0) return 0;
  Tensor first = full({1}, static_cast<double>(n), {.dtype = DType::i64, .device = ids.device()});
  dispatch_index(ids.dtype(), "embedding", [&](auto tag) {
    using I = decltype(tag);
    find_invalid_kernel<I><<<blocks_for(n, 256), 256, 0, stream_of(ids)>>>(
        ptr<const I>(ids), n, vocab, reinterpret_cast<unsigned long long*>(first.data_ptr()));
    TSU_CUDA_CHECK_LAUNCH();
  });
  return first.item<int64_t>();
}

void embedding_forward(const Tensor& weight, const Tensor& ids, const Tensor& out) {
  if (ids.numel() == 0 || weight.size(1) == 0) return;
  const int64_t row_bytes = weight.size(1) * static_cast<int64_t>(dtype_size(weight.dtype()));
  const auto fits = [&](size_t unit) {
    return row_bytes % int64_t(unit) == 0 && aligned(weight.data_ptr(), unit) && aligned(out.data_ptr(), unit);
  };
  dispatch_index(ids.dtype(), "embedding", [&](auto tag) {
    using I = decltype(tag);
    if (fits(16)) launch_gather<uint4, I>(weight, ids, out, row_bytes);
    else if (fits(8)) launch_gather<uint2, I>(weight, ids, out, row_bytes);
    else if (fits(4)) launch_gather<uint32_t, I>(weight, ids, out, row_bytes);
    else if (fits(2)) launch_gather<uint16_t, I>(weight, ids, out, row_bytes);
    else launch_gather<uint8_t, I>(weight, ids, out, row_bytes);
  });
}

void embedding_backward(const Tensor& grad, const Tensor& ids, const Tensor& dweight) {
  const int64_t n64 = ids.numel(), d = dweight.size(1), vocab = dweight.size(0);
  if (n64 == 0 || d == 0) {
    if (dweight.nbytes() > 0) TSU_CUDA_CHECK(cudaMemsetAsync(dweight.data_ptr(), 0, dweight.nbytes(), stream_of(dweight)));
    return;
  }
  TSU_CUDA_REQUIRE(n64 < (int64_t(1) << 31) && vocab < (int64_t(1) << 31), ValueError,
                   "[embedding] backward on CUDA supports fewer than 2^31 positions and vocabulary entries");
  const int n = static_cast<int>(n64);
  cudaStream_t s = stream_of(dweight);
  // Rows no id selects stay zero (all-zero bits are 0.0 in every float dtype).
  TSU_CUDA_CHECK(cudaMemsetAsync(dweight.data_ptr(), 0, dweight.nbytes(), s));
  // keys, positions, sorted keys, sorted positions.
  Tensor pairs = empty({4, n64}, {.dtype = DType::i32, .device = dweight.device()});
  int32_t* keys = ptr<int32_t>(pairs);
  int32_t* positions = keys + n64;
  int32_t* sorted_keys = keys + 2 * n64;
  int32_t* sorted_positions = keys + 3 * n64;
  dispatch_index(ids.dtype(), "embedding", [&](auto tag) {
    using I = decltype(tag);
    make_sort_pairs_kernel<I><<<blocks_for(n64, 256), 256, 0, s>>>(ptr<const I>(ids), keys, positions, n64);
    TSU_CUDA_CHECK_LAUNCH();
  });
  int end_bit = 1;
  while (end_bit < 31 && (int64_t(1) << end_bit) < vocab) ++end_bit;
  size_t temp_bytes = 0;
  TSU_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys, sorted_keys, positions, sorted_positions,
                                                 n, 0, end_bit, s));
  Tensor temp = empty({static_cast<int64_t>(temp_bytes) + 1}, {.dtype = DType::u8, .device = dweight.device()});
  TSU_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.data_ptr(), temp_bytes, keys, sorted_keys, positions,
                                                 sorted_positions, n, 0, end_bit, s));
  const Tensor sk = pairs.select(0, 2), sp = pairs.select(0, 3);
  dispatch_float(grad.dtype(), "embedding", [&](auto tag) {
    using T = decltype(tag);
    constexpr int kVector = 16 / int(sizeof(T));
    const bool wide = d % kVector == 0 && aligned(grad.data_ptr(), 16) && aligned(dweight.data_ptr(), 16);
    if (wide) launch_accumulate<T, kVector>(grad, sk, sp, dweight, n, d);
    else launch_accumulate<T, 1>(grad, sk, sp, dweight, n, d);
  });
}

}  // namespace tsumugi::cuda
