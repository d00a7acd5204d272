// Lesson 1: tensors.
//
// A tsumugi Tensor is a small handle: a shape, strides, an offset and a dtype over a block of
// memory that several tensors may share. This lesson creates tensors, looks at them through
// views, computes with broadcasting, and converts between dtypes.
#include <tsumugi/tsumugi.h>

#include <iostream>

using namespace tsumugi;

int main() {
  // 1. Creating tensors. Every creation function takes a shape and optional options.
  Tensor a = arange(0.0, 6.0, 1.0, {.dtype = DType::f32});  // 0, 1, ..., 5
  Tensor m = a.view({2, 3});                                   // the same six numbers as 2 rows
  std::cout << "a = " << a << "\n";
  std::cout << "m = a.view({2, 3}) = " << m << "\n";
  std::cout << "zeros({2, 2}, f64) = " << zeros({2, 2}, {.dtype = DType::f64}) << "\n\n";

  // 2. Views share memory. A transpose swaps two strides; no number moves.
  Tensor mt = m.t();
  std::cout << "m.t() has shape " << shape_str(mt.shape()) << " and strides (" << mt.stride(0) << ", "
            << mt.stride(1) << "); contiguous? " << std::boolalpha << mt.is_contiguous() << "\n";
  std::cout << "m.t() = " << mt << "\n";
  // Writing through a view changes the original.
  m.select(0, 1).fill_(-1.0);  // row 1 of m
  std::cout << "after m.select(0, 1).fill_(-1): a = " << a << "\n";
  std::cout << "m.slice(1, 0, 3, 2) (every other column) = " << m.slice(1, 0, 3, 2) << "\n\n";

  // 3. Arithmetic broadcasts like NumPy: a (2, 3) plus a (3) adds the row to every row.
  Tensor row = from_data<float>({10, 20, 30});
  Tensor col = from_data<float>({100, 200}, {2, 1});
  std::cout << "m + row = " << m + row << "\n";
  std::cout << "m * col = " << m * col << "\n";
  std::cout << "sum over columns = " << sum(m, {1}) << ", mean of all = " << mean(m).item<float>() << "\n\n";

  // 4. Matrix products go to BLAS. A transposed view is passed as a transpose, not copied.
  Tensor x = from_data<float>({1, 2, 3, 4}, {2, 2});
  std::cout << "x @ x^T = " << matmul(x, x.t()) << "\n\n";

  // 5. Random numbers come from a counter-based generator: the same seed gives the same numbers
  //    on any number of threads (and, later, on the GPU).
  Generator gen(42);
  std::cout << "randn({2, 3}) with seed 42 = " << randn({2, 3}, gen) << "\n\n";

  // 6. Dtypes. bf16 keeps float's range with 8 bits of mantissa, rounding to nearest even.
  Tensor third = full({3}, 1.0 / 3.0);
  std::cout << "1/3 in f32 = " << third << "\n";
  std::cout << "1/3 as bf16 and back = " << third.to(DType::bf16).to(DType::f32) << "\n";
  std::cout << "as f16 and back = " << third.to(DType::f16).to(DType::f32) << "\n";
  return 0;
}
