// Multi-tensor kernels of the optimizers: AdamW and SGD updates (with fp32 master weights for
// bf16/f16 parameters), and the gradient norm, scaling and finiteness checks. CPU reference:
// optimizers.cpp (adamw_update, SGD::step, grad_norm).
//
// One launch covers many tensors. A table with one Slot per tensor (pointers and sizes) is copied
// to the device once per call, and block b of the grid handles chunk b of the tensors laid end to
// end: kChunk elements inside one tensor (the last chunk of a tensor may be shorter). Within a
// chunk, thread t takes the groups of kVec consecutive elements t, t + kThreads, ...: one 128-bit
// load per array and group when the pointers are 16-byte aligned, scalar loads otherwise. Both
// paths visit elements in the same order, so a reduction's bits depend only on the tensor sizes.
#include "../cuda/device_math.cuh"
#include "optim_cuda.h"

namespace tsumugi::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kVec = 8;            // elements per group: one 128-bit load of 16-bit data, two of fp32
constexpr int64_t kChunk = kOptimChunk;  // elements per block: 8 rounds of kThreads groups
static_assert(kChunk % (kThreads * kVec) == 0, "a chunk is whole rounds of groups");

// One tensor of a launch, as the kernels see it (the same struct on host and device).
struct Slot {
  void* param;          // (n) working weights; for scale: the output gradient
  const void* grad;     // (n) gradient
  float* master;        // (n) fp32 master weights, nullptr when the parameter is fp32
  float* state0;        // (n) exp_avg or momentum buffer, or nullptr
  float* state1;        // (n) exp_avg_sq, or nullptr
  int64_t n;            // elements
  int64_t first_chunk;  // index of this tensor's first chunk in the launch
  int decayed;          // AdamW: weight decay applies
  int aligned;          // every pointer above is 16-byte aligned: vector loads
};

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The host side of one launch: the slots and their chunk count.
struct Table {
  std::vector<Slot> slots;
  int64_t chunks = 0;

  void add(Slot s) {
    if (s.n == 0) return;  // no chunk: would break the search for a block's slot
    s.first_chunk = chunks;
    s.aligned = aligned16(s.param) && aligned16(s.grad) && aligned16(s.master) && aligned16(s.state0) &&
                aligned16(s.state1);
    chunks += (s.n + kChunk - 1) / kChunk;
    slots.push_back(s);
  }
  int count() const { return static_cast<int>(slots.size()); }
  unsigned grid() const {
    TSU_CUDA_REQUIRE(chunks < (int64_t{1} << 31), ValueError, "[optim] too many elements for one launch");
    return static_cast<unsigned>(chunks);
  }
  // The slots in device memory on `stream`. A copy from pageable memory returns once the data is
  // staged, so the host vector may go; the device tensor may be freed right after the launch that
  // reads it, since the allocator reuses memory in stream order.
  Tensor upload(Device device, cudaStream_t stream) const {
    const int64_t bytes = static_cast<int64_t>(slots.size() * sizeof(Slot));
    Tensor table = empty({bytes}, {.dtype = DType::u8, .device = device});
    TSU_CUDA_CHECK(cudaMemcpyAsync(table.data_ptr(), slots.data(), static_cast<size_t>(bytes),
                                   cudaMemcpyHostToDevice, stream));
    return table;
  }
};

// ---- device helpers ----

// The slot that holds this block's chunk: the last one whose first chunk is <= blockIdx.x.
__device__ __forceinline__ Slot slot_of_block(const Slot* table, int count) {
  const int64_t chunk = blockIdx.x;
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (table[mid].first_chunk <= chunk) lo = mid;
    else hi = mid - 1;
  }
  return table[lo];
}

// Calls group(j) for each full group [j, j + kVec) of this thread in this block's chunk when the
// slot is aligned, and one(j) for each element otherwise, always in increasing j.
template <class Group, class One>
__device__ __forceinline__ void for_each_group(const Slot& s, Group&& group, One&& one) {
  const int64_t begin = (static_cast<int64_t>(blockIdx.x) - s.first_chunk) * kChunk;
  const int64_t end = s.n < begin + kChunk ? s.n : begin + kChunk;
  for (int64_t j = begin + static_cast<int64_t>(threadIdx.x) * kVec; j < end; j += int64_t{kThreads} * kVec) {
    if (s.aligned && j + kVec <= end) {
      group(j);
    } else {
      const int64_t stop = j + kVec < end ? j + kVec : end;
      for (int64_t k = j; k < stop; ++k) one(k);
    }
  }
}

// The bits of a 16-bit element, and back.
template <class T>
__device__ __forceinline__ uint32_t bits_of(T h) {
  if constexpr (std::is_same_v<T, bf16>) return __bfloat16_as_ushort(h);
  else return __half_as_ushort(h);
}
template <class T>
__device__ __forceinline__ T from_bits(uint32_t b) {
  if constexpr (std::is_same_v<T, bf16>) return __ushort_as_bfloat16(static_cast<unsigned short>(b));
  else return __ushort_as_half(static_cast<unsigned short>(b));
}

// kVec elements at p (16-byte aligned) as floats: two float4 loads, or one uint4 of 16-bit data.
template <class T>
__device__ __forceinline__ void load_group(const T* p, float (&x)[kVec]) {
  if constexpr (std::is_same_v<T, float>) {
    const float4 a = reinterpret_cast<const float4*>(p)[0];
    const float4 b = reinterpret_cast<const float4*>(p)[1];
    x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w, x[4] = b.x, x[5] = b.y, x[6] = b.z, x[7] = b.w;
  } else {
    static_assert(sizeof(T) * kVec == sizeof(uint4), "16-bit elements");
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {  // little-endian: the lower half of a word is the earlier element
      x[2 * k] = to_float(from_bits<T>(words[k] & 0xffffu));
      x[2 * k + 1] = to_float(from_bits<T>(words[k] >> 16));
    }
  }
}

// Stores kVec floats at p (16-byte aligned), rounded to T.
template <class T>
__device__ __forceinline__ void store_group(T* p, const float (&x)[kVec]) {
  if constexpr (std::is_same_v<T, float>) {
    reinterpret_cast<float4*>(p)[0] = make_float4(x[0], x[1], x[2], x[3]);
    reinterpret_cast<float4*>(p)[1] = make_float4(x[4], x[5], x[6], x[7]);
  } else {
    uint32_t words[4];
#pragma unroll
    for (int k = 0; k < 4; ++k)
      words[k] = bits_of(from_float<T>(x[2 * k])) | (bits_of(from_float<T>(x[2 * k + 1])) << 16);
    // Through the intrinsic: a plain uint4 assignment is sometimes split into four 32-bit stores.
    __stwb(reinterpret_cast<uint4*>(p), make_uint4(words[0], words[1], words[2], words[3]));
  }
}

// Sum of kThreads values, one per thread, in a fixed tree order; the result is valid in thread 0.
template <class A>
__device__ __forceinline__ A block_sum(A value) {
  __shared__ A shared[kThreads];
  shared[threadIdx.x] = value;
  __syncthreads();
#pragma unroll
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
    __syncthreads();
  }
  return shared[0];
}

// ---- AdamW ----

struct AdamWArgs {
  float step_size, inv_sqrt_bias2, beta1, beta2, eps;
  float decay;       // 1 - lr * weight_decay, for decayed slots
  float grad_scale;  // multiplies every gradient
};

// adamw_update's loop body, operation for operation.
__device__ __forceinline__ void adamw_element(float& w, float& m, float& v, float g, const AdamWArgs& a, float decay) {
  m = a.beta1 * m + (1.0f - a.beta1) * g;
  v = a.beta2 * v + (1.0f - a.beta2) * g * g;
  w = w * decay - a.step_size * m / (sqrtf(v) * a.inv_sqrt_bias2 + a.eps);
}

// P: parameter type, G: gradient type. fp32 parameters are their own master weights.
template <class P, class G>
__global__ void __launch_bounds__(kThreads) adamw_kernel(const Slot* table, int count, AdamWArgs a) {
  const Slot s = slot_of_block(table, count);
  P* param = static_cast<P*>(s.param);
  const G* grad = static_cast<const G*>(s.grad);
  float* master;
  if constexpr (std::is_same_v<P, float>) master = param;
  else master = s.master;
  float* exp_avg = s.state0;
  float* exp_avg_sq = s.state1;
  const float decay = s.decayed ? a.decay : 1.0f;
  for_each_group(
      s,
      [&](int64_t j) {
        float w[kVec], g[kVec], m[kVec], v[kVec];
        load_group(master + j, w);
        load_group(grad + j, g);
        load_group(exp_avg + j, m);
        load_group(exp_avg_sq + j, v);
#pragma unroll
        for (int k = 0; k < kVec; ++k) adamw_element(w[k], m[k], v[k], g[k] * a.grad_scale, a, decay);
        store_group(exp_avg + j, m);
        store_group(exp_avg_sq + j, v);
        store_group(master + j, w);
        if constexpr (!std::is_same_v<P, float>) store_group(param + j, w);
      },
      [&](int64_t j) {
        float w = master[j], m = exp_avg[j], v = exp_avg_sq[j];
        adamw_element(w, m, v, to_float(grad[j]) * a.grad_scale, a, decay);
        exp_avg[j] = m;
        exp_avg_sq[j] = v;
        master[j] = w;
        if constexpr (!std::is_same_v<P, float>) param[j] = from_float<P>(w);
      });
}

// ---- SGD ----

struct SgdArgs {
  float lr, momentum, weight_decay;
};

// SGD::step's loop body; `velocity` is null without momentum.
__device__ __forceinline__ void sgd_element(float& w, float* velocity, float g, const SgdArgs& a) {
  float d = g + a.weight_decay * w;
  if (velocity) {
    *velocity = a.momentum * *velocity + d;
    d = *velocity;
  }
  w -= a.lr * d;
}

template <class P, class G>
__global__ void __launch_bounds__(kThreads) sgd_kernel(const Slot* table, int count, SgdArgs a) {
  const Slot s = slot_of_block(table, count);
  P* param = static_cast<P*>(s.param);
  const G* grad = static_cast<const G*>(s.grad);
  float* master;
  if constexpr (std::is_same_v<P, float>) master = param;
  else master = s.master;
  float* velocity = s.state0;  // uniform across the block: null for every thread or for none
  for_each_group(
      s,
      [&](int64_t j) {
        float w[kVec], g[kVec], v[kVec] = {};
        load_group(master + j, w);
        load_group(grad + j, g);
        if (velocity) load_group(velocity + j, v);
#pragma unroll
        for (int k = 0; k < kVec; ++k) sgd_element(w[k], velocity ? &v[k] : nullptr, g[k], a);
        if (velocity) store_group(velocity + j, v);
        store_group(master + j, w);
        if constexpr (!std::is_same_v<P, float>) store_group(param + j, w);
      },
      [&](int64_t j) {
        float w = master[j];
        sgd_element(w, velocity ? velocity + j : nullptr, to_float(grad[j]), a);
        master[j] = w;
        if constexpr (!std::is_same_v<P, float>) param[j] = from_float<P>(w);
      });
}

// ---- gradient norm, finiteness, scaling ----

// partials[blockIdx.x] = sum of squares of this block's chunk, in fp32. The fused multiply-add
// is explicit so that the group and element paths round alike.
template <class G>
__global__ void __launch_bounds__(kThreads) sum_squares_kernel(const Slot* table, int count, float* partials) {
  const Slot s = slot_of_block(table, count);
  const G* grad = static_cast<const G*>(s.grad);
  float acc = 0.0f;
  for_each_group(
      s,
      [&](int64_t j) {
        float x[kVec];
        load_group(grad + j, x);
#pragma unroll
        for (int k = 0; k < kVec; ++k) acc = __fmaf_rn(x[k], x[k], acc);
      },
      [&](int64_t j) {
        const float x = to_float(grad[j]);
        acc = __fmaf_rn(x, x, acc);
      });
  const float total = block_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// Inf and NaN have every exponent bit set.
__device__ __forceinline__ bool nonfinite(float x) { return (__float_as_uint(x) & 0x7f800000u) == 0x7f800000u; }

// *flag = 1 when this block's chunk holds an Inf or a NaN (plain stores of the same value).
template <class G>
__global__ void __launch_bounds__(kThreads) nonfinite_kernel(const Slot* table, int count, int* flag) {
  const Slot s = slot_of_block(table, count);
  const G* grad = static_cast<const G*>(s.grad);
  bool bad = false;
  for_each_group(
      s,
      [&](int64_t j) {
        float x[kVec];
        load_group(grad + j, x);
#pragma unroll
        for (int k = 0; k < kVec; ++k) bad |= nonfinite(x[k]);
      },
      [&](int64_t j) { bad |= nonfinite(to_float(grad[j])); });
  if (__syncthreads_or(bad) && threadIdx.x == 0) *flag = 1;
}

// param (the output) = grad * scale, rounded to G.
template <class G>
__global__ void __launch_bounds__(kThreads) scale_kernel(const Slot* table, int count, float scale) {
  const Slot s = slot_of_block(table, count);
  const G* in = static_cast<const G*>(s.grad);
  G* out = static_cast<G*>(s.param);
  for_each_group(
      s,
      [&](int64_t j) {
        float x[kVec];
        load_group(in + j, x);
#pragma unroll
        for (int k = 0; k < kVec; ++k) x[k] *= scale;
        store_group(out + j, x);
      },
      [&](int64_t j) { out[j] = from_float<G>(to_float(in[j]) * scale); });
}

// ---- host side ----

constexpr DType kDtypes[] = {DType::f32, DType::bf16, DType::f16};

// Calls f(T{}) for f32, bf16, f16: the dtypes of parameters and gradients on CUDA.
template <class F>
void dispatch_optim(DType dtype, const char* op, F&& f) {
  switch (dtype) {
    case DType::f32: f(float{}); return;
    case DType::bf16: f(bf16{}); return;
    case DType::f16: f(f16{}); return;
    default:
      throw ValueError(std::string("[") + op + "] dtype " + std::string(dtype_name(dtype)) +
                       " is not supported on CUDA (use f32, bf16 or f16)");
  }
}

float* float_ptr(const Tensor& t) { return t.defined() ? ptr<float>(t) : nullptr; }

Slot slot_of(const OptimSlot& o) {
  return Slot{o.param.data_ptr(),   o.grad.data_ptr(),  float_ptr(o.master), float_ptr(o.state0),
              float_ptr(o.state1),  o.param.numel(),    0,                   o.decayed ? 1 : 0,
              0};
}

Slot grad_slot(const Tensor& grad, void* out = nullptr) {
  return Slot{out, grad.data_ptr(), nullptr, nullptr, nullptr, grad.numel(), 0, 0, 0};
}

// Calls launch(P{}, G{}, table) once for each (param dtype, grad dtype) pair present, in a fixed order.
template <class Launch>
void for_each_dtype_pair(const std::vector<OptimSlot>& slots, const char* op, Launch&& launch) {
  for (DType pd : kDtypes) {
    for (DType gd : kDtypes) {
      Table table;
      for (const OptimSlot& o : slots)
        if (o.param.dtype() == pd && o.grad.dtype() == gd) table.add(slot_of(o));
      if (table.slots.empty()) continue;
      dispatch_optim(pd, op, [&](auto p) { dispatch_optim(gd, op, [&](auto g) { launch(p, g, table); }); });
    }
  }
}

// Calls launch(G{}, table, first index) for each gradient dtype present, in a fixed order;
// `out[i]` (when given) is the output of grads[i].
template <class Launch>
void for_each_dtype(const std::vector<Tensor>& grads, const std::vector<Tensor>* out, Launch&& launch) {
  for (DType gd : kDtypes) {
    Table table;
    for (size_t i = 0; i < grads.size(); ++i)
      if (grads[i].dtype() == gd) table.add(grad_slot(grads[i], out ? (*out)[i].data_ptr() : nullptr));
    if (table.slots.empty()) continue;
    dispatch_optim(gd, "optim", [&](auto g) { launch(g, table); });
  }
}

void require_dtypes(const std::vector<Tensor>& grads, const char* op) {
  for (const Tensor& g : grads)
    TSU_CUDA_REQUIRE(g.dtype() == DType::f32 || g.dtype() == DType::bf16 || g.dtype() == DType::f16, ValueError,
                     std::string("[") + op + "] gradient dtype " + std::string(dtype_name(g.dtype())) +
                         " is not supported on CUDA (use f32, bf16 or f16)");
}

}  // namespace

void adamw_step(const std::vector<OptimSlot>& slots, const AdamWStepConstants& c, float decay, float grad_scale) {
  if (slots.empty()) return;
  const Tensor& first = slots.front().param;
  cudaStream_t stream = stream_of(first);
  const AdamWArgs args{c.step_size, c.inv_sqrt_bias2, c.beta1, c.beta2, c.eps, decay, grad_scale};
  for_each_dtype_pair(slots, "adamw", [&](auto p, auto g, const Table& table) {
    using P = decltype(p);
    using G = decltype(g);
    const Tensor device_table = table.upload(first.device(), stream);
    adamw_kernel<P, G><<<table.grid(), kThreads, 0, stream>>>(ptr<const Slot>(device_table), table.count(), args);
    TSU_CUDA_CHECK_LAUNCH();
  });
}

void sgd_step(const std::vector<OptimSlot>& slots, float lr, float momentum, float weight_decay) {
  if (slots.empty()) return;
  const Tensor& first = slots.front().param;
  cudaStream_t stream = stream_of(first);
  const SgdArgs args{lr, momentum, weight_decay};
  for_each_dtype_pair(slots, "sgd", [&](auto p, auto g, const Table& table) {
    using P = decltype(p);
    using G = decltype(g);
    const Tensor device_table = table.upload(first.device(), stream);
    sgd_kernel<P, G><<<table.grid(), kThreads, 0, stream>>>(ptr<const Slot>(device_table), table.count(), args);
    TSU_CUDA_CHECK_LAUNCH();
  });
}

std::vector<std::vector<float>> square_partials(const std::vector<Tensor>& grads) {
  require_dtypes(grads, "grad_norm");
  std::vector<std::vector<float>> out(grads.size());
  int64_t chunks = 0;
  for (size_t i = 0; i < grads.size(); ++i) {
    out[i].resize(static_cast<size_t>((grads[i].numel() + kChunk - 1) / kChunk));
    chunks += static_cast<int64_t>(out[i].size());
  }
  if (chunks == 0) return out;
  const Device device = grads.front().device();
  cudaStream_t stream = stream_of(grads.front());
  // The launches fill consecutive ranges, one dtype group after another in kDtypes order.
  const Tensor partials = empty({chunks}, {.dtype = DType::f32, .device = device});
  int64_t offset = 0;
  for_each_dtype(grads, nullptr, [&](auto g, const Table& table) {
    using G = decltype(g);
    const Tensor device_table = table.upload(device, stream);
    sum_squares_kernel<G><<<table.grid(), kThreads, 0, stream>>>(ptr<const Slot>(device_table), table.count(),
                                                                  ptr<float>(partials) + offset);
    TSU_CUDA_CHECK_LAUNCH();
    offset += table.chunks;
  });
  const Tensor host = partials.to(Device::cpu());
  const float* next = host.data<float>();
  // Back to the order of `grads`, in the order the launches went.
  for (DType gd : kDtypes)
    for (size_t i = 0; i < grads.size(); ++i) {
      if (grads[i].dtype() != gd) continue;
      std::copy(next, next + out[i].size(), out[i].begin());
      next += out[i].size();
    }
  return out;
}

std::vector<Tensor> scaled(const std::vector<Tensor>& grads, float scale) {
  require_dtypes(grads, "scale_grads");
  std::vector<Tensor> out;
  out.reserve(grads.size());
  for (const Tensor& g : grads) out.push_back(empty(g.shape(), {.dtype = g.dtype(), .device = g.device()}));
  if (grads.empty()) return out;
  cudaStream_t stream = stream_of(grads.front());
  for_each_dtype(grads, &out, [&](auto g, const Table& table) {
    using G = decltype(g);
    const Tensor device_table = table.upload(grads.front().device(), stream);
    scale_kernel<G><<<table.grid(), kThreads, 0, stream>>>(ptr<const Slot>(device_table), table.count(), scale);
    TSU_CUDA_CHECK_LAUNCH();
  });
  return out;
}

bool all_finite(const std::vector<Tensor>& grads) {
  require_dtypes(grads, "grads_finite");
  if (grads.empty()) return true;
  const Device device = grads.front().device();
  cudaStream_t stream = stream_of(grads.front());
  const Tensor flag = zeros({1}, {.dtype = DType::i32, .device = device});
  for_each_dtype(grads, nullptr, [&](auto g, const Table& table) {
    using G = decltype(g);
    const Tensor device_table = table.upload(device, stream);
    nonfinite_kernel<G><<<table.grid(), kThreads, 0, stream>>>(ptr<const Slot>(device_table), table.count(),
                                                                ptr<int>(flag));
    TSU_CUDA_CHECK_LAUNCH();
  });
  return flag.item<int32_t>() == 0;
}

}  // namespace tsumugi::cuda
