#pragma once
// Internal, CUDA only: warp-level tensor-core pieces shared by the attention kernels of
// attention_mma.cu (forward) and attention_mma_backward.cu: mma.sync m16n8k16 with bf16 or f16
// operands and f32 accumulators, fragment loads from shared memory, and tile loads.
//
// Fragment layouts (PTX ISA, mma.m16n8k16, lane = 4 * group + tig):
//   A (16 x 16, row major): a0 (group, 2tig..+1), a1 (group + 8, 2tig..+1), a2 (group, 2tig + 8..+9),
//                           a3 (group + 8, 2tig + 8..+9)
//   B (16 x 8, k major):    b0 (k 2tig..+1, n group), b1 (k 2tig + 8..+9, n group)
//   C (16 x 8, f32):        c0, c1 (group, 2tig..+1), c2, c3 (group + 8, 2tig..+1)
// The C layout of two adjacent n blocks is the A layout of one k block: scores computed by one
// mma feed the next (P V, dS K) straight from registers.
// Shared tiles are row-major [row][d], rows padded by 8 elements so that the 32 lanes of a fragment
// load hit 32 different banks. A pair whose k runs along a row is one 32-bit word; a B operand
// whose k runs down the rows is read with ldmatrix.trans.
#include "attention_kernels.cuh"

namespace tsumugi::cuda::attention::tensor_core {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kBlockQ = 16 * kWarps;  // queries per block
constexpr int kBlockK = 64;           // keys per tile
constexpr int kPad = 8;               // elements of padding per shared row

template <class T>
__device__ __forceinline__ uint32_t pack(float lo, float hi) {
  if constexpr (std::is_same_v<T, bf16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
}

/// c += a * b for one m16n8k16 tile.
template <class T>
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, bf16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

template <class T>
__device__ __forceinline__ uint32_t word(const T* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

/// Loads b0, b1 of two adjacent n blocks of a B operand whose k runs down the rows of a row-major
/// shared tile: lane l points at row (l % 16) of the 16 x 16 block, columns 8 * (l / 16) ..+7.
__device__ __forceinline__ void load_b_transposed(uint32_t (&r)[4], const void* row_ptr) {
  const uint32_t address = static_cast<uint32_t>(__cvta_generic_to_shared(row_ptr));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

/// dst (kRowsPerTile, HD + kPad) = src rows [0, rows), dims [0, hd); zero elsewhere. With `wide`
/// (see wide_loads) 8 elements move per load.
template <class T, int HD, int kRowsPerTile = 64>
__device__ void load_tile(T* dst, const T* src, int64_t row_stride, int rows, int hd, bool wide) {
  constexpr int ld = HD + kPad;
  if (wide) {
    for (int idx = threadIdx.x; idx < kRowsPerTile * HD / 8; idx += kThreads) {
      const int r = idx / (HD / 8), d = idx % (HD / 8) * 8;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (r < rows && d < hd) v = *reinterpret_cast<const uint4*>(src + r * row_stride + d);
      *reinterpret_cast<uint4*>(dst + r * ld + d) = v;
    }
  } else {
    for (int idx = threadIdx.x; idx < kRowsPerTile * HD; idx += kThreads) {
      const int r = idx / HD, d = idx % HD;
      dst[r * ld + d] = (r < rows && d < hd) ? src[r * row_stride + d] : from_float<T>(0.f);
    }
  }
}

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

/// True when every row of q, k, v (and dout, when set) starts 16-byte aligned and hd % 8 == 0:
/// then tiles move 8 elements per load.
inline bool wide_loads(const Args& a) {
  bool wide = a.head_dim % 8 == 0;
  for (const Operand* x : {&a.q, &a.k, &a.v, &a.dout}) {
    if (x->data == nullptr) continue;
    wide = wide && reinterpret_cast<uintptr_t>(x->data) % 16 == 0 && x->batch % 8 == 0 && x->row % 8 == 0 &&
           x->head % 8 == 0;
  }
  return wide;
}

/// Calls f(T{}, std::integral_constant<int, HD>{}) for T = bf16 or f16 and the padded head
/// dimension HD in {32, 64, 128} (a multiple of the mma's k = 16).
template <class F>
void dispatch_16bit(DType dtype, int head_dim, F&& f) {
  const auto with_dim = [&](auto tag) {
    if (head_dim <= 32) f(tag, std::integral_constant<int, 32>{});
    else if (head_dim <= 64) f(tag, std::integral_constant<int, 64>{});
    else f(tag, std::integral_constant<int, 128>{});
  };
  if (dtype == DType::bf16) with_dim(bf16{});
  else with_dim(f16{});
}

}  // namespace tsumugi::cuda::attention::tensor_core
