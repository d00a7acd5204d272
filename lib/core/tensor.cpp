// Tensor handles: accessors, creation, dtype/device conversion and copies.
#include <tsumugi/core/autograd.h>
#include <tsumugi/core/tensor.h>

#include <cstring>

#include "autograd_graph.h"
#include "dispatch.h"
#include "strided.h"
#ifdef TSUMUGI_WITH_CUDA
#include "cuda/kernels.h"
#endif

namespace tsumugi {

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

std::string shape_str(const Shape& shape) {
  if (shape.size() == 1) return fmt::format("({},)", shape[0]);
  return fmt::format("({})", fmt::join(shape, ", "));
}

Strides contiguous_strides(const Shape& shape) {
  Strides strides(shape.size());
  int64_t step = 1;
  for (size_t d = shape.size(); d-- > 0;) {
    strides[d] = step;
    step *= std::max<int64_t>(shape[d], 1);
  }
  return strides;
}

int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op) {
  const int64_t wrapped = dim < 0 ? dim + ndim : dim;
  TSU_CHECK(wrapped >= 0 && wrapped < std::max<int64_t>(ndim, 1), IndexError,
            "[{}] dimension {} out of range for a {}-d tensor", op, dim, ndim);
  return wrapped;
}

Tensor make_tensor(std::shared_ptr<Storage> storage, Shape shape, Strides strides, int64_t offset,
                   DType dtype) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::move(storage);
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor make_view(const Tensor& base, Shape shape, Strides strides, int64_t offset) {
  return make_tensor(base.impl()->storage, std::move(shape), std::move(strides), offset, base.dtype());
}

namespace {

const TensorImpl& checked(const std::shared_ptr<TensorImpl>& impl) {
  TSU_CHECK(impl != nullptr, ValueError, "[tensor] operation on an undefined tensor");
  return *impl;
}

void check_shape(const Shape& shape, const char* op) {
  for (int64_t s : shape)
    TSU_CHECK(s >= 0, ValueError, "[{}] negative size in shape {}", op, shape_str(shape));
}

// Copies src into dst elementwise (same shape; any strides and dtypes), on the CPU.
void copy_cpu(const Tensor& dst, const Tensor& src) {
  dispatch_any(dst.dtype(), [&](auto dst_tag) {
    using D = decltype(dst_tag);
    dispatch_any(src.dtype(), [&](auto src_tag) {
      using S = decltype(src_tag);
      D* out = static_cast<D*>(dst.data_ptr());
      const S* in = static_cast<const S*>(src.data_ptr());
      for_each_row<2>(dst.shape(), {dst.strides(), src.strides()},
                      [&](const std::array<int64_t, 2>& off, int64_t n, const std::array<int64_t, 2>& st) {
                        D* o = out + off[0];
                        const S* i = in + off[1];
                        if constexpr (std::is_same_v<D, S>) {
                          if (st[0] == 1 && st[1] == 1) {
                            std::memcpy(o, i, static_cast<size_t>(n) * sizeof(D));
                            return;
                          }
                        }
                        for (int64_t k = 0; k < n; ++k) o[k * st[0]] = convert<D>(i[k * st[1]]);
                      });
    });
  });
}

}  // namespace

Tensor::Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

const Shape& Tensor::shape() const { return checked(impl_).shape; }
const Strides& Tensor::strides() const { return checked(impl_).strides; }
int64_t Tensor::dim() const { return static_cast<int64_t>(shape().size()); }
int64_t Tensor::numel() const { return shape_numel(shape()); }
int64_t Tensor::offset() const { return checked(impl_).offset; }
DType Tensor::dtype() const { return checked(impl_).dtype; }
Device Tensor::device() const { return checked(impl_).device(); }

int64_t Tensor::size(int64_t dim) const { return shape()[wrap_dim(dim, this->dim(), "size")]; }
int64_t Tensor::stride(int64_t dim) const { return strides()[wrap_dim(dim, this->dim(), "stride")]; }

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (size_t d = shape().size(); d-- > 0;) {
    if (shape()[d] == 1) continue;
    if (strides()[d] != expected) return false;
    expected *= shape()[d];
  }
  return true;
}

bool Tensor::shares_storage(const Tensor& other) const {
  return defined() && other.defined() && impl_->storage == other.impl_->storage;
}

void* Tensor::data_ptr() const {
  const TensorImpl& impl = checked(impl_);
  if (!impl.storage || impl.storage->data() == nullptr) return nullptr;
  return static_cast<char*>(impl.storage->data()) + impl.offset * static_cast<int64_t>(dtype_size(impl.dtype));
}

template <class T>
T* Tensor::data() const {
  if constexpr (std::is_same_v<std::remove_const_t<T>, uint16_t>) {
    // bf16 and f16 tensors are read and written as their raw 16-bit patterns.
    TSU_CHECK(dtype() == DType::u16 || dtype() == DType::bf16 || dtype() == DType::f16, ValueError,
              "[data] requested u16 from a {} tensor", dtype_name(dtype()));
  } else {
    TSU_CHECK(dtype() == dtype_of<std::remove_const_t<T>>(), ValueError, "[data] requested {} from a {} tensor",
              dtype_name(dtype_of<std::remove_const_t<T>>()), dtype_name(dtype()));
  }
  TSU_CHECK(device().is_cpu(), NotImplementedError,
            "[data] host access to a tensor on {}: this operation has no CUDA kernel (move the tensor with "
            ".to(Device::cpu()) first)", device().str());
  return static_cast<T*>(data_ptr());
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  const Tensor host = to(Device::cpu()).to(dtype_of<T>()).contiguous();
  const T* begin = host.data<T>();
  return std::vector<T>(begin, begin + host.numel());
}

template <class T>
T Tensor::item() const {
  TSU_CHECK(numel() == 1, ValueError, "[item] tensor of shape {} has {} elements, not 1", shape_str(shape()), numel());
  return to_vector<T>()[0];
}

#define TSU_INSTANTIATE(T)                              \
  template T* Tensor::data<T>() const;                  \
  template const T* Tensor::data<const T>() const;      \
  template std::vector<T> Tensor::to_vector<T>() const; \
  template T Tensor::item<T>() const;
TSU_INSTANTIATE(float)
TSU_INSTANTIATE(double)
TSU_INSTANTIATE(int32_t)
TSU_INSTANTIATE(int64_t)
TSU_INSTANTIATE(uint16_t)
TSU_INSTANTIATE(uint32_t)
TSU_INSTANTIATE(uint8_t)
TSU_INSTANTIATE(bool)
#undef TSU_INSTANTIATE

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), {.dtype = dtype(), .device = device()});
  {
    NoGradGuard no_grad;
    out.copy_(*this);
  }
  if (needs_grad({this})) record("clone", {*this}, out, [](const Tensor& g) { return std::vector<Tensor>{g}; });
  return out;
}

Tensor Tensor::to(DType target) const {
  if (target == dtype()) return *this;
  Tensor out = empty(shape(), {.dtype = target, .device = device()});
  {
    NoGradGuard no_grad;
    out.copy_(*this);
  }
  if (needs_grad({this}) && is_floating(target)) {
    const DType source = dtype();
    record("to_dtype", {*this}, out, [source](const Tensor& g) { return std::vector<Tensor>{g.to(source)}; });
  }
  return out;
}

Tensor Tensor::to(Device target, bool non_blocking) const {
  if (target == device()) return *this;
  const Tensor src = contiguous();
  Tensor out = empty(shape(), {.dtype = dtype(), .device = target});
  // Asynchronous only from pinned host memory to a device: pageable memory could change under the copy.
  const bool async = non_blocking && src.is_pinned() && target.is_cuda();
  copy_bytes(out.data_ptr(), target, src.data_ptr(), src.device(), nbytes(), async);
  if (needs_grad({this})) {
    const Device source = device();
    record("to_device", {*this}, out, [source](const Tensor& g) { return std::vector<Tensor>{g.to(source)}; });
  }
  return out;
}

bool Tensor::is_pinned() const { return defined() && impl_->storage && impl_->storage->pinned(); }

Tensor Tensor::pin_memory() const {
  TSU_CHECK(device().is_cpu(), ValueError, "[pin_memory] only CPU tensors can be pinned, not {}", device().str());
  if (is_pinned()) return *this;
  const Tensor src = contiguous();
  Tensor out = make_tensor(std::make_shared<Storage>(nbytes(), Device::cpu(), /*pinned=*/true), shape(),
                           contiguous_strides(shape()), 0, dtype());
  copy_bytes(out.data_ptr(), Device::cpu(), src.data_ptr(), Device::cpu(), nbytes());
  return out;
}

// ---- autograd accessors ----
bool Tensor::requires_grad() const { return checked(impl_).requires_grad; }

Tensor& Tensor::set_requires_grad(bool requires_grad) {
  TSU_CHECK(is_leaf() || requires_grad, AutogradError,
            "[requires_grad] cannot turn off requires_grad on a non-leaf tensor (made by {}); use detach()",
            grad_fn_name());
  TSU_CHECK(!requires_grad || is_floating(dtype()), AutogradError,
            "[requires_grad] only floating tensors can require grad, not {}", dtype_name(dtype()));
  impl_->requires_grad = requires_grad;
  return *this;
}

Tensor Tensor::grad() const { return checked(impl_).grad; }
void Tensor::set_grad(const Tensor& grad) const {
  TSU_CHECK(!grad.defined() || grad.shape() == shape(), ValueError, "[set_grad] gradient shape {} != tensor shape {}",
            grad.defined() ? shape_str(grad.shape()) : "", shape_str(shape()));
  checked(impl_);
  impl_->grad = grad;
  impl_->grad_owned = false;
}
void Tensor::zero_grad() const { set_grad(Tensor()); }
bool Tensor::is_leaf() const { return checked(impl_).grad_fn == nullptr; }
std::string Tensor::grad_fn_name() const { return is_leaf() ? "" : impl_->grad_fn->name; }

Tensor Tensor::detach() const {
  const TensorImpl& impl = checked(impl_);
  return make_tensor(impl.storage, impl.shape, impl.strides, impl.offset, impl.dtype);
}

void Tensor::set_grad_ready_hook(std::function<void(const Tensor&)> hook) const {
  TSU_CHECK(is_leaf(), AutogradError, "[grad_ready_hook] only leaf tensors have gradient hooks");
  impl_->grad_ready_hook = std::move(hook);
}

// ---- in-place ----
namespace {
void check_inplace(const Tensor& t, const char* op) {
  TSU_CHECK(!(grad_enabled() && t.requires_grad()), AutogradError,
            "[{}] in-place change of a tensor that requires grad; wrap it in NoGradGuard", op);
}
}  // namespace

Tensor& Tensor::fill_(double value) {
  check_inplace(*this, "fill_");
  if (numel() == 0) return *this;
  if (device().is_cuda()) {
#ifdef TSUMUGI_WITH_CUDA
    cuda::fill(*this, value);
#endif
    return *this;
  }
  dispatch_any(dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T v = convert<T>(value);
    T* out = static_cast<T*>(data_ptr());
    for_each_row<1>(shape(), {strides()}, [&](const std::array<int64_t, 1>& off, int64_t n, const std::array<int64_t, 1>& st) {
      for (int64_t k = 0; k < n; ++k) out[off[0] + k * st[0]] = v;
    });
  });
  return *this;
}

Tensor& Tensor::copy_(const Tensor& src) {
  check_inplace(*this, "copy_");
  Tensor source = src.dim() == dim() && src.shape() == shape() ? src : src.detach().expand(shape());
  if (device().is_cpu() && source.device().is_cpu()) {
    copy_cpu(*this, source);
#ifdef TSUMUGI_WITH_CUDA
  } else if (device().is_cuda() && source.device() == device()) {
    cuda::copy_strided(*this, source);
  } else if (device().is_cuda() && !(source.is_contiguous() && dtype() == source.dtype())) {
    copy_(source.to(device()));  // move first, convert and re-stride on the device
#endif
  } else if (is_contiguous() && source.is_contiguous() && dtype() == source.dtype()) {
    copy_bytes(data_ptr(), device(), source.data_ptr(), source.device(), nbytes());
  } else {  // stage through the host: convert there, then copy back
    Tensor staged = empty(shape(), {.dtype = dtype()});
    copy_cpu(staged, source.detach().to(Device::cpu()));
    if (is_contiguous()) copy_bytes(data_ptr(), device(), staged.data_ptr(), Device::cpu(), nbytes());
    else TSU_FAIL(NotImplementedError, "[copy_] strided copy into a {} tensor", device().str());
  }
  return *this;
}

// ---- creation ----
Tensor empty(const Shape& shape, TensorOptions options) {
  check_shape(shape, "empty");
  const size_t nbytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(options.dtype);
  Tensor out = make_tensor(std::make_shared<Storage>(nbytes, options.device), shape, contiguous_strides(shape), 0,
                           options.dtype);
  if (options.requires_grad) out.set_requires_grad(true);
  return out;
}

Tensor full(const Shape& shape, double value, TensorOptions options) {
  const bool requires_grad = options.requires_grad;
  options.requires_grad = false;
  Tensor out = empty(shape, options);
  out.fill_(value);
  if (requires_grad) out.set_requires_grad(true);
  return out;
}

Tensor zeros(const Shape& shape, TensorOptions options) { return full(shape, 0.0, options); }
Tensor ones(const Shape& shape, TensorOptions options) { return full(shape, 1.0, options); }
Tensor empty_like(const Tensor& like) { return empty(like.shape(), {.dtype = like.dtype(), .device = like.device()}); }
Tensor zeros_like(const Tensor& like) { return zeros(like.shape(), {.dtype = like.dtype(), .device = like.device()}); }
Tensor ones_like(const Tensor& like) { return ones(like.shape(), {.dtype = like.dtype(), .device = like.device()}); }
Tensor scalar_tensor(double value, TensorOptions options) { return full({}, value, options); }

Tensor arange(double start, double end, double step, TensorOptions options) {
  TSU_CHECK(step != 0, ValueError, "[arange] step must not be 0");
  const int64_t n = std::max<int64_t>(0, static_cast<int64_t>(std::ceil((end - start) / step)));
  Tensor host = empty({n}, {.dtype = DType::f64});
  double* p = host.data<double>();
  for (int64_t i = 0; i < n; ++i) p[i] = start + static_cast<double>(i) * step;
  Tensor out = host.to(options.dtype).to(options.device);
  if (options.requires_grad) out.set_requires_grad(true);
  return out;
}

Tensor arange(int64_t end, TensorOptions options) { return arange(0.0, static_cast<double>(end), 1.0, options); }

template <class T>
Tensor from_data(const std::vector<T>& values, Shape shape, TensorOptions options) {
  if (shape.empty()) shape = {static_cast<int64_t>(values.size())};
  TSU_CHECK(shape_numel(shape) == static_cast<int64_t>(values.size()), ValueError,
            "[from_data] {} values do not fill shape {}", values.size(), shape_str(shape));
  Tensor host = empty(shape, {.dtype = dtype_of<T>()});
  if constexpr (std::is_same_v<T, bool>) {
    for (size_t i = 0; i < values.size(); ++i) host.data<bool>()[i] = values[i];
  } else if (!values.empty()) {
    std::memcpy(host.data_ptr(), values.data(), values.size() * sizeof(T));
  }
  Tensor out = host.to(options.dtype).to(options.device);
  if (options.requires_grad) out.set_requires_grad(true);
  return out;
}

template Tensor from_data<float>(const std::vector<float>&, Shape, TensorOptions);
template Tensor from_data<double>(const std::vector<double>&, Shape, TensorOptions);
template Tensor from_data<int32_t>(const std::vector<int32_t>&, Shape, TensorOptions);
template Tensor from_data<int64_t>(const std::vector<int64_t>&, Shape, TensorOptions);
template Tensor from_data<uint16_t>(const std::vector<uint16_t>&, Shape, TensorOptions);
template Tensor from_data<uint32_t>(const std::vector<uint32_t>&, Shape, TensorOptions);
template Tensor from_data<uint8_t>(const std::vector<uint8_t>&, Shape, TensorOptions);
template Tensor from_data<bool>(const std::vector<bool>&, Shape, TensorOptions);

}  // namespace tsumugi
