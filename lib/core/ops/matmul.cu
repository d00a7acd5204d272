// Matrix products on CUDA through cuBLASLt: the CUDA side of matmul, linear and linear_gelu.
// CPU reference: gemm and matmul_kernel in matmul.cpp.
//
// cuBLASLt is column-major, and a row-major (M, N) matrix is a column-major (N, M) one, so
// C = A B is computed as C^T = B^T A^T: cuBLASLt's "A" is our b and its "B" is our a.
//
// Per call, the host cost is one map lookup: each device has one cuBLASLt handle and a 32 MiB
// workspace (created on first use, never freed), and each distinct problem (shapes, strides,
// dtypes, transposes, epilogue, pointer alignments) keeps its descriptors and the algorithm that
// the heuristic chose. All GEMMs of a device run on its one tsumugi stream, and the heuristic
// never offers split-K schemes whose result depends on timing, so a GEMM gives the same bits on
// every run (cuBLAS guarantees run-to-run reproducibility on one stream and one GPU model).
#include <cublasLt.h>

#include <tsumugi/core/ops.h>

#include <array>
#include <map>
#include <mutex>

#include "../cuda/device_math.cuh"
#include "../cuda/kernels.h"
#include "matmul_cuda.h"

namespace tsumugi::cuda {
namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;
constexpr size_t kMaxCachedPlans = 1024;

void check_cublas(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  throw Error(std::string("[matmul] ") + what + " failed: " + cublasGetStatusString(status));
}

// ---- the tanh-form GELU, as gelu() in activations.cpp ----

template <class A>
__device__ __forceinline__ A tanh_of(A v) {
  if constexpr (std::is_same_v<A, double>) return ::tanh(v);
  else return ::tanhf(v);
}

template <class A>
__device__ __forceinline__ A gelu_value(A x) {
  const A inner = A(0.7978845608028654) * (x + A(0.044715) * x * x * x);
  return A(0.5) * x * (A(1) + tanh_of(inner));
}

template <class A>
__device__ __forceinline__ A gelu_derivative(A x) {
  const A inner = A(0.7978845608028654) * (x + A(0.044715) * x * x * x);
  const A t = tanh_of(inner);
  const A dinner = A(0.7978845608028654) * (A(1) + A(3 * 0.044715) * x * x);
  return A(0.5) * (A(1) + t) + A(0.5) * x * (A(1) - t * t) * dinner;
}

// What cuBLASLt could not fuse: out (rows, n) = src + bias (when add_bias), and, when gelu_out is
// given, gelu_out = gelu(that sum). src and out may be the same buffer.
template <class T>
__global__ void finish_epilogue_kernel(const T* src, const T* bias, bool add_bias, T* out, T* gelu_out, int64_t n,
                                       int64_t total) {
  using A = acc_t<T>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    A v = load_as<A>(src + i);
    if (add_bias) {
      v += load_as<A>(bias + i % n);
      store_from(out + i, v);
    }
    if (gelu_out) store_from(gelu_out + i, gelu_value(v));
  }
}

template <class T>
__global__ void gelu_backward_kernel(const T* g, const T* pre, T* dpre, int64_t total) {
  using A = acc_t<T>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    store_from(dpre + i, load_as<A>(g + i) * gelu_derivative(load_as<A>(pre + i)));
}

// ---- per-device handle and workspace, and the plan cache ----

struct DeviceGemm {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
};

// One cuBLASLt problem: descriptors and the chosen algorithm (usable = false: none was offered).
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool usable = false;
};

using PlanKey = std::array<int64_t, 24>;

std::mutex gemm_mutex;  // guards the maps below and the pointers set on a cached descriptor
std::map<int, DeviceGemm>& device_gemms() {
  static std::map<int, DeviceGemm> gemms;
  return gemms;
}
std::map<PlanKey, Plan>& plans() {
  static std::map<PlanKey, Plan> cache;
  return cache;
}

DeviceGemm& device_gemm(int device) {
  DeviceGemm& g = device_gemms()[device];
  if (!g.handle) {
    check_cublas(cublasLtCreate(&g.handle), "cublasLtCreate");
    TSU_CUDA_CHECK(cudaMalloc(&g.workspace, kWorkspaceBytes));
  }
  return g;
}

void destroy(Plan& p) {
  cublasLtMatmulDescDestroy(p.desc);
  cublasLtMatrixLayoutDestroy(p.a);
  cublasLtMatrixLayoutDestroy(p.b);
  cublasLtMatrixLayoutDestroy(p.c);
}

// Largest power of two (up to 256) that divides the address: what cuBLASLt may assume of it.
int64_t alignment_of(const void* p) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  if (address == 0) return 256;
  const uintptr_t low = address & (~address + 1);
  return static_cast<int64_t>(low < 256 ? low : 256);
}

// How cuBLASLt reads one operand: its transpose flag and the column-major matrix it is stored as.
struct LtOperand {
  cublasOperation_t op = CUBLAS_OP_N;
  uint64_t rows = 0, cols = 0;
  int64_t ld = 0;
};

// A row-major view (R, C) with leading dimension ld is stored as the column-major (C, R) matrix,
// its transpose: cuBLASLt reads it untransposed, which is what C^T = B^T A^T needs. A
// column-major view is stored as itself, so cuBLASLt must transpose it.
LtOperand lt_operand(const Tensor& t) {
  const int64_t rows = t.size(-2), cols = t.size(-1);
  const int64_t s0 = t.stride(-2), s1 = t.stride(-1);
  const int64_t one = 1;
  if ((s1 == 1 || cols <= 1) && (rows <= 1 || s0 >= std::max(cols, one)))
    return {CUBLAS_OP_N, static_cast<uint64_t>(cols), static_cast<uint64_t>(rows),
            rows <= 1 ? std::max(cols, one) : s0};
  if ((s0 == 1 || rows <= 1) && (cols <= 1 || s1 >= std::max(rows, one)))
    return {CUBLAS_OP_T, static_cast<uint64_t>(rows), static_cast<uint64_t>(cols),
            cols <= 1 ? std::max(rows, one) : s1};
  throw ValueError("[matmul] operand " + std::to_string(rows) + "x" + std::to_string(cols) + " with strides (" +
                   std::to_string(s0) + ", " + std::to_string(s1) + ") is neither row- nor column-major");
}

cudaDataType_t cuda_type(DType dtype) {
  switch (dtype) {
    case DType::f32: return CUDA_R_32F;
    case DType::f64: return CUDA_R_64F;
    case DType::bf16: return CUDA_R_16BF;
    case DType::f16: return CUDA_R_16F;
    default:
      throw ValueError(std::string("[matmul] dtype ") + std::string(dtype_name(dtype)) +
                       " is not supported on CUDA (use f32, bf16 or f16)");
  }
}

cublasComputeType_t compute_type(DType dtype) {
  if (dtype == DType::f64) return CUBLAS_COMPUTE_64F;
  if (dtype == DType::f32 && allow_tf32()) return CUBLAS_COMPUTE_32F_FAST_TF32;
  return CUBLAS_COMPUTE_32F;  // bf16 and f16 inputs accumulate in fp32
}

template <class V>
void set_desc(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const V& value) {
  check_cublas(cublasLtMatmulDescSetAttribute(desc, attr, &value, sizeof(value)), "cublasLtMatmulDescSetAttribute");
}

cublasLtMatrixLayout_t make_layout(cudaDataType_t type, uint64_t rows, uint64_t cols, int64_t ld, int32_t batch,
                                   int64_t batch_stride) {
  cublasLtMatrixLayout_t layout = nullptr;
  check_cublas(cublasLtMatrixLayoutCreate(&layout, type, rows, cols, ld), "cublasLtMatrixLayoutCreate");
  if (batch > 1) {
    check_cublas(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof(batch)),
                 "cublasLtMatrixLayoutSetAttribute");
    check_cublas(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &batch_stride,
                                                  sizeof(batch_stride)),
                 "cublasLtMatrixLayoutSetAttribute");
  }
  return layout;
}

// One GEMM call in cuBLASLt's terms: D (m, n) = op(A) (m, k) op(B) (k, n), column-major.
struct LtProblem {
  int device = 0;
  DType dtype = DType::f32;
  LtOperand a, b;
  int64_t m = 0, n = 0, k = 0, ldc = 0;
  int64_t batch = 1, stride_a = 0, stride_b = 0, stride_c = 0;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* pa = nullptr;
  const void* pb = nullptr;
  void* pc = nullptr;
  const void* bias = nullptr;
  void* aux = nullptr;
};

PlanKey key_of(const LtProblem& p) {
  return {p.device, static_cast<int64_t>(p.dtype), static_cast<int64_t>(compute_type(p.dtype)),
          static_cast<int64_t>(p.epilogue), static_cast<int64_t>(p.a.op), static_cast<int64_t>(p.a.rows),
          static_cast<int64_t>(p.a.cols), p.a.ld, static_cast<int64_t>(p.b.op), static_cast<int64_t>(p.b.rows),
          static_cast<int64_t>(p.b.cols), p.b.ld, p.m, p.n, p.k, p.ldc, p.batch, p.stride_a, p.stride_b, p.stride_c,
          alignment_of(p.pa), alignment_of(p.pb), alignment_of(p.pc) * 1000 + alignment_of(p.bias),
          alignment_of(p.aux)};
}

Plan make_plan(const LtProblem& p, cublasLtHandle_t handle) {
  Plan plan;
  const cudaDataType_t type = cuda_type(p.dtype);
  const cudaDataType_t scale_type = p.dtype == DType::f64 ? CUDA_R_64F : CUDA_R_32F;
  check_cublas(cublasLtMatmulDescCreate(&plan.desc, compute_type(p.dtype), scale_type), "cublasLtMatmulDescCreate");
  set_desc(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, p.a.op);
  set_desc(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, p.b.op);
  set_desc(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, p.epilogue);
  // The heuristic reads the alignment of the bias and aux pointers from the descriptor.
  if (p.bias) set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, p.bias);
  if (p.aux) {
    set_desc(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, p.aux);
    set_desc(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, p.ldc);
  }
  const auto batch = static_cast<int32_t>(p.batch);
  plan.a = make_layout(type, p.a.rows, p.a.cols, p.a.ld, batch, p.stride_a);
  plan.b = make_layout(type, p.b.rows, p.b.cols, p.b.ld, batch, p.stride_b);
  plan.c = make_layout(type, static_cast<uint64_t>(p.m), static_cast<uint64_t>(p.n), p.ldc, batch, p.stride_c);

  cublasLtMatmulPreference_t pref = nullptr;
  check_cublas(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
  auto set_pref = [&](cublasLtMatmulPreferenceAttributes_t attr, auto value) {
    check_cublas(cublasLtMatmulPreferenceSetAttribute(pref, attr, &value, sizeof(value)),
                 "cublasLtMatmulPreferenceSetAttribute");
  };
  set_pref(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, static_cast<uint64_t>(kWorkspaceBytes));
  // Split-K partial sums are reduced either in place, in a fixed order guarded by counters, or
  // in a separate pass over fp32 partials: both deterministic. OUTPUT_TYPE would round the
  // partial sums to bf16/f16 before adding them, so it is left out for accuracy.
  set_pref(CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
           static_cast<uint32_t>(CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_INPLACE |
                                 CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE));
  // The default assumes 256-byte aligned buffers; views (slices of a fused QKV output) are not.
  set_pref(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, static_cast<uint32_t>(alignment_of(p.pa)));
  set_pref(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, static_cast<uint32_t>(alignment_of(p.pb)));
  set_pref(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, static_cast<uint32_t>(alignment_of(p.pc)));
  set_pref(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, static_cast<uint32_t>(alignment_of(p.pc)));

  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t status =
      cublasLtMatmulAlgoGetHeuristic(handle, plan.desc, plan.a, plan.b, plan.c, plan.c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  plan.usable = status == CUBLAS_STATUS_SUCCESS && found > 0 && result.state == CUBLAS_STATUS_SUCCESS;
  if (plan.usable) plan.algo = result.algo;
  return plan;
}

// Runs the problem; false when cuBLASLt offers no algorithm for it (the caller falls back to a
// plain epilogue, done by finish_epilogue_kernel).
bool run(const LtProblem& p, cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(gemm_mutex);
  DeviceGemm& g = device_gemm(p.device);
  const PlanKey key = key_of(p);
  auto it = plans().find(key);
  if (it == plans().end()) {
    if (plans().size() >= kMaxCachedPlans) {
      for (auto& [k, plan] : plans()) destroy(plan);
      plans().clear();
    }
    it = plans().emplace(key, make_plan(p, g.handle)).first;
  }
  Plan& plan = it->second;
  if (!plan.usable) return false;
  if (p.bias) set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, p.bias);
  if (p.aux) set_desc(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, p.aux);
  const double alpha64 = 1.0, beta64 = 0.0;
  const float alpha32 = 1.0f, beta32 = 0.0f;
  const bool f64 = p.dtype == DType::f64;
  check_cublas(cublasLtMatmul(g.handle, plan.desc, f64 ? static_cast<const void*>(&alpha64) : &alpha32, p.pa, plan.a,
                              p.pb, plan.b, f64 ? static_cast<const void*>(&beta64) : &beta32, p.pc, plan.c, p.pc,
                              plan.c, &plan.algo, g.workspace, kWorkspaceBytes, stream),
               "cublasLtMatmul");
  return true;
}

}  // namespace

void gemm(const Tensor& a, int64_t batch_stride_a, const Tensor& b, int64_t batch_stride_b, const Tensor& c,
          int64_t batch, const Tensor& bias, const Tensor& gelu_pre) {
  const int64_t m = a.size(-2), k = a.size(-1), n = b.size(-1);
  TSU_CUDA_REQUIRE(b.size(-2) == k && c.size(-2) == m && c.size(-1) == n && c.is_contiguous(), ValueError,
                   "[matmul] internal: GEMM operands do not match");
  TSU_CUDA_REQUIRE(batch >= 1 && batch <= INT32_MAX, ValueError,
                   "[matmul] batch of " + std::to_string(batch) + " matrices is out of range");
  if (m == 0 || n == 0) return;
  cudaStream_t stream = stream_of(c);
  const bool gelu = gelu_pre.defined();
  const int64_t total = batch * m * n;
  const Tensor target = gelu ? gelu_pre : c;  // where the GEMM (plus bias) lands, unless fused
  if (k == 0) {
    fill(target, 0.0);
  } else {
    LtProblem p;
    p.device = c.device().index;
    p.dtype = c.dtype();
    p.a = lt_operand(b);  // C^T = B^T A^T
    p.b = lt_operand(a);
    p.m = n;
    p.n = m;
    p.k = k;
    p.ldc = n;
    p.batch = batch;
    p.stride_a = batch_stride_b;
    p.stride_b = batch_stride_a;
    p.stride_c = m * n;
    p.pa = b.data_ptr();
    p.pb = a.data_ptr();
    p.bias = bias.defined() ? bias.data_ptr() : nullptr;
    // The fused GELU stores its input in an aux matrix whose leading dimension must be a
    // multiple of 8; f64 has no GELU epilogue.
    if (gelu && n % 8 == 0 && p.dtype != DType::f64) {
      p.epilogue = bias.defined() ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
      p.pc = c.data_ptr();
      p.aux = gelu_pre.data_ptr();
      if (run(p, stream)) return;
      p.aux = nullptr;
    }
    p.pc = target.data_ptr();
    p.epilogue = bias.defined() ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    bool bias_pending = false;
    if (!run(p, stream)) {
      TSU_CUDA_REQUIRE(bias.defined(), NotImplementedError,
                       "[matmul] cuBLASLt has no algorithm for (" + std::to_string(m) + ", " + std::to_string(k) +
                           ") x (" + std::to_string(k) + ", " + std::to_string(n) + ") in " +
                           std::string(dtype_name(c.dtype())));
      p.epilogue = CUBLASLT_EPILOGUE_DEFAULT;
      p.bias = nullptr;
      TSU_CUDA_REQUIRE(run(p, stream), NotImplementedError,
                       "[matmul] cuBLASLt has no algorithm for this " + std::string(dtype_name(c.dtype())) + " GEMM");
      bias_pending = true;
    }
    if (!bias_pending && !gelu) return;
    dispatch_float(c.dtype(), "matmul", [&](auto tag) {
      using T = decltype(tag);
      finish_epilogue_kernel<<<blocks_for(total, 256), 256, 0, stream>>>(
          ptr<const T>(target), bias_pending ? ptr<const T>(bias) : nullptr, bias_pending, ptr<T>(target),
          gelu ? ptr<T>(c) : nullptr, n, total);
      TSU_CUDA_CHECK_LAUNCH();
    });
    return;
  }
  // K = 0: the product is zero, the output is the bias (and its GELU).
  if (!bias.defined() && !gelu) return;
  dispatch_float(c.dtype(), "matmul", [&](auto tag) {
    using T = decltype(tag);
    finish_epilogue_kernel<<<blocks_for(total, 256), 256, 0, stream>>>(
        ptr<const T>(target), bias.defined() ? ptr<const T>(bias) : nullptr, bias.defined(), ptr<T>(target),
        gelu ? ptr<T>(c) : nullptr, n, total);
    TSU_CUDA_CHECK_LAUNCH();
  });
}

void gelu_backward(const Tensor& g, const Tensor& pre, const Tensor& dpre) {
  const int64_t total = dpre.numel();
  if (total == 0) return;
  cudaStream_t stream = stream_of(dpre);
  dispatch_float(dpre.dtype(), "linear_gelu", [&](auto tag) {
    using T = decltype(tag);
    gelu_backward_kernel<<<blocks_for(total, 256), 256, 0, stream>>>(ptr<const T>(g), ptr<const T>(pre), ptr<T>(dpre),
                                                                    total);
    TSU_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace tsumugi::cuda
