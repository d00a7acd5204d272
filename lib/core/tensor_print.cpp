// Readable printing: tensor([[1.0000, 2.0000], [3.0000, 4.0000]], shape=(2, 2), dtype=f32).
#include <tsumugi/core/tensor.h>

#include <cmath>
#include <ostream>

#include "check.h"

namespace tsumugi {
namespace {

constexpr int64_t kEdgeItems = 3;    // shown at each end of a long dimension
constexpr int64_t kSummarize = 1000;  // elide when the tensor has more elements than this

std::string format_value(double v, bool integral) {
  if (integral) return fmt::format("{}", static_cast<int64_t>(v));
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  const double a = std::fabs(v);
  if (a != 0 && (a >= 1e6 || a < 1e-4)) return fmt::format("{:.4e}", v);
  return fmt::format("{:.4f}", v);
}

void render(std::string& out, const std::vector<double>& values, const Shape& shape, size_t dim, int64_t offset,
            bool summarize, bool integral, int indent) {
  if (shape.empty()) {
    out += format_value(values[static_cast<size_t>(offset)], integral);
    return;
  }
  const int64_t size = shape[dim];
  int64_t inner = 1;
  for (size_t d = dim + 1; d < shape.size(); ++d) inner *= shape[d];
  out += '[';
  for (int64_t i = 0; i < size; ++i) {
    if (summarize && size > 2 * kEdgeItems && i == kEdgeItems) {
      out += dim + 1 == shape.size() ? "..., " : fmt::format("...,\n{:{}}", "", indent + 1);
      i = size - kEdgeItems - 1;
      continue;
    }
    if (dim + 1 == shape.size()) {
      out += format_value(values[static_cast<size_t>(offset + i)], integral);
    } else {
      render(out, values, shape, dim + 1, offset + i * inner, summarize, integral, indent + 1);
    }
    if (i + 1 < size) out += dim + 1 == shape.size() ? ", " : fmt::format(",\n{:{}}", "", indent + 1);
  }
  out += ']';
}

}  // namespace

std::string Tensor::str() const {
  if (!defined()) return "tensor(undefined)";
  const std::vector<double> values = to_vector<double>();
  const bool integral = !is_floating(dtype());
  std::string out = "tensor(";
  render(out, values, shape(), 0, 0, numel() > kSummarize, integral, 7);
  out += fmt::format(", shape={}, dtype={}", shape_str(shape()), dtype_name(dtype()));
  if (!device().is_cpu()) out += fmt::format(", device={}", device().str());
  if (requires_grad()) out += is_leaf() ? ", requires_grad" : fmt::format(", grad_fn={}", grad_fn_name());
  out += ')';
  return out;
}

std::ostream& operator<<(std::ostream& os, const Tensor& tensor) { return os << tensor.str(); }

}  // namespace tsumugi
