// A pipeline stage at run time: the schedule's forward and backward passes over this stage's
// blocks, activations and their gradients moved with non-blocking sends and receives.
//
// Bitwise agreement with one process rests on three facts: a stage computes exactly the ops the
// whole model would for its blocks; the gradient arriving at a stage's input is the same sum of
// the same two contributions (IEEE addition is commutative); and the tied embedding's two
// contributions are combined as e + h, which equals the h + e one process computes.
#include <tsumugi/core/autograd.h>
#include <tsumugi/core/ops.h>
#include <tsumugi/core/optim.h>
#include <tsumugi/dist/pipeline_stage.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <deque>
#include <fstream>
#include <map>
#include <optional>
#include <set>

#include "core/check.h"

namespace tsumugi {
namespace {

// Tags of the three kinds of messages between stages; each kind arrives in the order sent.
constexpr int kActivationTag = 71;
constexpr int kGradientTag = 72;
constexpr int kTiedTag = 73;
constexpr int kGatherTag = 74;   // gather_weights, gather_optimizer_state
constexpr int kForwardTag = 75;  // forward_loss_sum, decode

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

double steady_microseconds() {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::vector<int64_t> balance_layers(const ModelConfig& config, int64_t seq_len, int64_t stages) {
  const ModelConfig c = config.resolved();
  const int64_t kv = c.kv_heads * c.head_dim();
  const double per_block = c.arch == Arch::gpt2
                               ? static_cast<double>(4 * c.dim * c.dim + 2 * c.dim * c.ffn_dim)
                               : static_cast<double>(2 * c.dim * c.dim + 2 * c.dim * kv + 3 * c.dim * c.ffn_dim);
  // 6 N per token for the block's matrices plus 12 T D for attention; the head is 6 V D.
  std::vector<double> costs(static_cast<size_t>(c.layers),
                            6.0 * per_block + 12.0 * static_cast<double>(seq_len * c.dim));
  if (!costs.empty()) costs.back() += 6.0 * static_cast<double>(c.vocab * c.dim);
  return balance_stages(costs, stages);
}

PipelineStage::PipelineStage(CausalLM& model, std::shared_ptr<ProcessGroup> group, PipelineOptions options)
    : model_(model), group_(std::move(group)), options_(std::move(options)) {
  const ModelConfig& c = model_.config();
  stages_ = group_->size();
  stage_ = group_->rank();
  starts_ = options_.stage_starts.empty() ? balance_layers(c, c.context, stages_) : options_.stage_starts;
  TSU_CHECK(static_cast<int64_t>(starts_.size()) == stages_ && starts_.front() == 0, ValueError,
            "[pipeline] {} stage starts for {} stages; the first must be layer 0", starts_.size(), stages_);
  for (size_t s = 1; s < starts_.size(); ++s)
    TSU_CHECK(starts_[s] > starts_[s - 1] && starts_[s] < c.layers, ValueError,
              "[pipeline] stage {} starts at layer {}: starts must increase and stay below {} layers (every stage "
              "needs at least one block)",
              s, starts_[s], c.layers);
  begin_ = starts_[static_cast<size_t>(stage_)];
  end_ = stage_ + 1 < stages_ ? starts_[static_cast<size_t>(stage_ + 1)] : c.layers;
  all_params_ = model_.named_parameters();
  for (const auto& [name, tensor] : all_params_) {
    all_shapes_.push_back(tensor.shape());
    const int64_t piece = model_.parameter_piece(name);
    int64_t stage_of = stages_ - 1;  // the embedding's is the first stage, the head's the last
    if (piece < 0) stage_of = 0;
    else if (piece < c.layers) while (starts_[static_cast<size_t>(stage_of)] > piece) --stage_of;
    owners_[name] = stage_of;
    const bool embedding = piece == -1, head = piece == c.layers;
    const bool tied = c.tied_embeddings && embedding &&
                      (ends_with(name, "wte.weight") || ends_with(name, "embed_tokens.weight"));
    if (tied && stages_ > 1) tied_name_ = name;
    if ((piece >= begin_ && piece < end_) || (embedding && is_first()) || (head && is_last()) || (tied && is_last()))
      params_.emplace_back(name, tensor);
  }
}

int64_t PipelineStage::owner(const std::string& name) const {
  const auto it = owners_.find(name);
  TSU_CHECK(it != owners_.end(), ValueError, "[pipeline] the model has no parameter '{}'", name);
  return it->second;
}

bool PipelineStage::is_tied_copy(const std::string& name) const {
  return !tied_name_.empty() && name == tied_name_ && is_last();
}

void PipelineStage::add_span(std::string name, std::string category, double start_us, double end_us) {
  if (!tracing_) return;
  spans_.push_back({std::move(name), std::move(category), start_us - trace_origin_us_, end_us - start_us});
}

double PipelineStage::run(const Tensor& inputs_in, const Tensor& targets_in, int64_t micro_batch, double loss_weight,
                          double z_loss, const BackwardHook& before_backward, const BackwardHook& after_backward) {
  const Tensor inputs = is_first() ? inputs_in.to(model_.device()) : inputs_in;
  const Tensor targets = is_last() ? targets_in.to(model_.device()) : targets_in;
  TSU_CHECK(micro_batch > 0 && inputs.dim() == 2 && inputs.size(0) % micro_batch == 0, ValueError,
            "[pipeline] inputs {} do not split into micro-batches of {}", shape_str(inputs.shape()), micro_batch);
  const ModelConfig& c = model_.config();
  const int64_t micro_batches = inputs.size(0) / micro_batch, length = inputs.size(1);
  const std::vector<PipelineAction> plan = pipeline_schedule(options_.schedule, stages_, stage_, micro_batches);
  const Shape activation_shape{micro_batch, length, c.dim};
  const TensorOptions activation_options{.dtype = params_.front().second.dtype(), .device = model_.device()};

  struct InFlight {
    Tensor input;   // the received activation (a leaf), on every stage but the first
    Tensor output;  // the blocks' output, or the loss on the last stage
  };
  std::vector<InFlight> live(static_cast<size_t>(micro_batches));
  stats_ = {};
  auto waited = [&](double start) {
    const double end = steady_microseconds();
    stats_.wait_seconds += (end - start) / 1e6;
    add_span("recv", "recv", start, end);
  };

  // Two transports. Asynchronous (MPI, host memory): receives are posted one ahead of their use,
  // so that a message can land during compute, and sends return at once. Grouped (NCCL, where
  // an operation blocks until its peer's is posted): after each action one send_recv batch holds
  // that action's sends and the receives of the next (pipeline_exchanges, whose batches are
  // checked to complete for every schedule).
  const bool grouped = options_.grouped_transport;
  std::vector<std::shared_ptr<Work>> sends;  // asynchronous
  std::deque<int64_t> forward_order, backward_order;
  for (const PipelineAction& a : plan) (a.kind == PipelineAction::forward ? forward_order : backward_order).push_back(a.micro_batch);
  struct Posted {
    Tensor buffer;
    std::shared_ptr<Work> work;
  };
  std::optional<Posted> next_activation, next_gradient;
  auto post = [&](std::deque<int64_t>& order, std::optional<Posted>& slot, int peer, int tag) {
    if (order.empty()) return;
    order.pop_front();
    Tensor buffer = empty(activation_shape, activation_options);
    slot = Posted{buffer, group_->recv_async(buffer, peer, tag)};
  };
  // The tied embedding, on the first and the last stage, when its two gradients are summed per
  // micro-batch (deterministic mode); else null, and finish_tied_gradients sums them.
  const Tensor* tied = nullptr;
  if (options_.per_micro_batch_tied_sum)
    for (const auto& [name, p] : params_)
      if (name == tied_name_) tied = &p;
  const std::vector<std::vector<PipelineMessage>> exchanges =
      grouped ? pipeline_exchanges(options_.schedule, stages_, stage_, micro_batches, tied != nullptr)
              : std::vector<std::vector<PipelineMessage>>{};
  std::map<std::pair<int, int64_t>, Tensor> arrived, outgoing;  // grouped: by (message kind, micro-batch)
  // Grouped: runs batch i of the exchanges, taking what is sent from `outgoing`.
  auto exchange = [&](size_t i) {
    if (exchanges[i].empty()) return;
    std::vector<PeerOp> ops;
    for (const PipelineMessage& m : exchanges[i]) {
      const std::pair<int, int64_t> key{m.kind, m.micro_batch};
      const int tag = m.kind == PipelineMessage::activation ? kActivationTag
                      : m.kind == PipelineMessage::gradient ? kGradientTag
                                                            : kTiedTag;
      Tensor t;
      if (m.send) {
        t = outgoing.at(key);
        outgoing.erase(key);
      } else {
        t = arrived[key] = m.kind == PipelineMessage::tied
                               ? empty(tied->shape(), {.dtype = tied->dtype(), .device = tied->device()})
                               : empty(activation_shape, activation_options);
      }
      ops.push_back({m.send ? PeerOp::send : PeerOp::recv, t, static_cast<int>(m.peer), tag});
    }
    const double start = steady_microseconds();
    group_->send_recv(ops);
    waited(start);
  };
  // What the next pass takes from the previous (forward) or next (backward) stage.
  auto receive = [&](PipelineMessage::Kind kind, int64_t m) {
    if (grouped) {
      Tensor t = arrived.at({kind, m});
      arrived.erase({kind, m});
      return t;
    }
    const bool forward = kind == PipelineMessage::activation;
    std::optional<Posted>& slot = forward ? next_activation : next_gradient;
    const double start = steady_microseconds();
    slot->work->wait();
    Tensor received = slot->buffer;
    slot.reset();
    const int peer = static_cast<int>(forward ? stage_ - 1 : stage_ + 1);
    post(forward ? forward_order : backward_order, slot, peer, forward ? kActivationTag : kGradientTag);
    waited(start);
    return received;
  };
  auto send = [&](PipelineMessage::Kind kind, int64_t m, Tensor t, int peer, int tag) {
    if (grouped) outgoing[{kind, m}] = std::move(t);
    else sends.push_back(group_->send_async(std::move(t), peer, tag));
  };
  if (grouped) {
    exchange(0);
  } else {
    if (!is_first()) post(forward_order, next_activation, static_cast<int>(stage_ - 1), kActivationTag);
    if (!is_last()) post(backward_order, next_gradient, static_cast<int>(stage_ + 1), kGradientTag);
  }

  const double step_start = steady_microseconds();
  double loss_sum = 0;
  int64_t alive = 0, backwards_left = micro_batches;
  for (size_t i = 0; i < plan.size(); ++i) {
    const PipelineAction& action = plan[i];
    const int64_t m = action.micro_batch;
    InFlight& slot = live[static_cast<size_t>(m)];
    if (action.kind == PipelineAction::forward) {
      Tensor x;
      double start = 0;  // the forward span: the embedding's lookup on the first stage, then the blocks
      if (is_first()) {
        start = steady_microseconds();
        x = model_.embed(inputs.narrow(0, m * micro_batch, micro_batch));
      } else {
        x = receive(PipelineMessage::activation, m);
        x.set_requires_grad(true);
        slot.input = x;
        start = steady_microseconds();
      }
      Tensor y = model_.blocks(x, begin_, end_);
      if (is_last()) {
        const Tensor logits = model_.head(y);
        const Tensor t = targets.narrow(0, m * micro_batch, micro_batch).contiguous();
        slot.output = cross_entropy(logits.view({-1, c.vocab}), t.view({-1}), -100, z_loss);
        loss_sum += slot.output.detach().to(Device::cpu()).to(DType::f64).item<double>();
      } else {
        slot.output = y.contiguous();
      }
      const double end = steady_microseconds();
      stats_.compute_seconds += (end - start) / 1e6;
      add_span("F" + std::to_string(m), "forward", start, end);
      if (!is_last())
        send(PipelineMessage::activation, m, slot.output.detach(), static_cast<int>(stage_ + 1), kActivationTag);
      stats_.peak_micro_batches = std::max(stats_.peak_micro_batches, ++alive);
      if (grouped) exchange(i + 1);
      continue;
    }
    const bool last_backward = --backwards_left == 0;
    if (before_backward) before_backward(m, last_backward);
    Tensor gradient;
    if (!is_last()) gradient = receive(PipelineMessage::gradient, m);
    const double start = steady_microseconds();
    if (is_last()) (loss_weight == 1.0 ? slot.output : slot.output * loss_weight).backward();
    else slot.output.backward(gradient);
    const double end = steady_microseconds();
    stats_.compute_seconds += (end - start) / 1e6;
    add_span("B" + std::to_string(m), "backward", start, end);
    if (!is_first())
      send(PipelineMessage::gradient, m, slot.input.grad().contiguous(), static_cast<int>(stage_ - 1), kGradientTag);
    // The leaf of micro-batch m is e_m + h_m on the first stage; the last stage's copy is filled
    // in by finish_tied_gradients. Grouped, h_m arrives in the exchange below.
    if (tied != nullptr && is_last()) {
      send(PipelineMessage::tied, m, tied->grad().contiguous(), 0, kTiedTag);
      tied->zero_grad();
    } else if (tied != nullptr && !grouped) {
      Tensor h = empty(tied->shape(), {.dtype = tied->dtype(), .device = tied->device()});
      group_->recv(h, static_cast<int>(stages_ - 1), kTiedTag);
      tied->set_grad(add(tied->grad(), h));
    }
    if (grouped) {
      exchange(i + 1);
      if (const auto it = arrived.find({PipelineMessage::tied, m}); it != arrived.end()) {
        tied->set_grad(add(tied->grad(), it->second));
        arrived.erase(it);
      }
    }
    if (after_backward) after_backward(m, last_backward);
    slot = {};
    --alive;
  }
  const double wait_start = steady_microseconds();
  for (const auto& work : sends) work->wait();
  const double step_end = steady_microseconds();
  stats_.wait_seconds += (step_end - wait_start) / 1e6;
  add_span("send", "send", wait_start, step_end);
  stats_.step_seconds = (step_end - step_start) / 1e6;
  Tensor loss = from_data<double>({loss_sum});
  group_->broadcast(loss, static_cast<int>(stages_ - 1));
  // The stages start a step together (it follows the optimizer's collectives), so the longest
  // stage's step is the pipeline's.
  Tensor makespan = from_data<double>({stats_.step_seconds});
  group_->all_reduce(makespan, ReduceOp::max);
  stats_.makespan_seconds = makespan.item<double>();
  return loss.item<double>();
}

void PipelineStage::finish_tied_gradients() {
  if (tied_name_.empty() || (!is_first() && !is_last())) return;
  for (const auto& [name, p] : params_) {
    if (name != tied_name_) continue;
    const int last = static_cast<int>(stages_ - 1);
    if (!options_.per_micro_batch_tied_sum) {  // the first stage adds the head's sum to its own
      if (is_last()) {
        group_->send(p.grad().contiguous(), 0, kTiedTag);
      } else {
        Tensor h = empty(p.shape(), {.dtype = p.dtype(), .device = p.device()});
        group_->recv(h, last, kTiedTag);
        p.set_grad(add(p.grad(), h));
      }
    }
    if (is_first()) {
      group_->send(p.grad().contiguous(), last, kTiedTag);
    } else {
      Tensor sum = empty(p.shape(), {.dtype = p.dtype(), .device = p.device()});
      group_->recv(sum, 0, kTiedTag);
      p.set_grad(sum);
    }
  }
}

double PipelineStage::gradient_norm() const {
  // Every parameter's pieces (grad_square_pieces: the block sums, not the gradients, come to
  // the host) at fixed offsets of one vector, filled by their owners; the sum over stages adds
  // exact zeros; then the pieces in the model's order, as grad_norm adds them.
  const int64_t block = grad_square_piece_size(model_.device());
  const NamedTensors& all = all_params_;
  std::vector<int64_t> offsets;
  int64_t total_blocks = 0;
  for (const Shape& shape : all_shapes_) {  // the whole model's, also where released
    offsets.push_back(total_blocks);
    total_blocks += (shape_numel(shape) + block - 1) / block;
  }
  std::vector<Tensor> owned;
  std::vector<size_t> where;
  for (size_t i = 0; i < all.size(); ++i)
    if (owner(all[i].first) == stage_ && all[i].second.grad().defined()) {
      owned.push_back(all[i].second);
      where.push_back(i);
    }
  const std::vector<std::vector<double>> owned_pieces = grad_square_pieces(owned);
  Tensor pieces = zeros({total_blocks}, {.dtype = DType::f64});
  double* out = pieces.data<double>();
  for (size_t k = 0; k < owned.size(); ++k)
    std::copy(owned_pieces[k].begin(), owned_pieces[k].end(), out + offsets[where[k]]);
  group_->all_reduce(pieces);
  double sum = 0;
  for (int64_t b = 0; b < total_blocks; ++b) sum += out[b];
  return std::sqrt(sum);
}

void PipelineStage::release_other_weights() {
  if (released_) return;
  std::set<std::string> mine;
  for (const auto& [name, p] : params_) mine.insert(name);
  std::vector<std::string> others;
  for (const auto& [name, p] : all_params_)
    if (!mine.count(name)) others.push_back(name);
  model_.release_parameters(others);
  released_ = true;
}

int64_t PipelineStage::held_parameters() const {
  int64_t n = 0;
  for (const auto& [name, p] : all_params_) n += p.numel();
  return n;
}

StateDict PipelineStage::gather_weights(const StateDict& local, int root) const {
  // Model order on every rank: each owner sends to the root in the order the root receives.
  StateDict full;
  for (size_t i = 0; i < all_params_.size(); ++i) {
    const std::string& name = all_params_[i].first;
    const int from = static_cast<int>(owner(name));
    if (stage_ != from && stage_ != root) continue;
    Tensor t;
    if (stage_ == from) {
      const auto it = local.find(name);
      TSU_CHECK(it != local.end(), ValueError, "[pipeline] stage {} has no weights '{}'", stage_, name);
      t = it->second.to(Device::cpu()).to(DType::f32).contiguous();
      TSU_CHECK(t.shape() == all_shapes_[i], ValueError, "[pipeline] stage {} holds '{}' as {}, not {}", stage_, name,
                shape_str(t.shape()), shape_str(all_shapes_[i]));
      if (from != root) group_->send(t, root, kGatherTag);
    } else {
      t = empty(all_shapes_[i], {.dtype = DType::f32});
      group_->recv(t, from, kGatherTag);
    }
    if (stage_ == root) full[name] = t;
  }
  return full;
}

StateDict PipelineStage::gather_optimizer_state(const StateDict& local, int root) const {
  StateDict full;
  for (size_t i = 0; i < all_params_.size(); ++i) {
    const auto& [name, p] = all_params_[i];
    std::vector<std::string> keys{"exp_avg." + name, "exp_avg_sq." + name};
    if (p.dtype() != DType::f32) keys.push_back("master." + name);
    const int from = static_cast<int>(owner(name));
    if (stage_ != from && stage_ != root) continue;
    for (const std::string& key : keys) {
      Tensor t;
      if (stage_ == from) {
        auto it = local.find(key);
        TSU_CHECK(it != local.end(), ValueError, "[pipeline] stage {} has no optimizer state '{}'", stage_, key);
        t = it->second.to(Device::cpu()).to(DType::f32).contiguous();
        if (from != root) group_->send(t, root, kGatherTag);
      } else {
        t = empty(all_shapes_[i], {.dtype = DType::f32});
        group_->recv(t, from, kGatherTag);
      }
      if (stage_ == root) full[key] = t.clone();
    }
  }
  if (stage_ == root)
    for (const auto& [key, t] : local)  // "step" and anything else every stage has alike
      if (!full.count(key) && key.find('.') == std::string::npos) full[key] = t;
  return full;
}

double PipelineStage::forward_loss_sum(const Tensor& inputs, const Tensor& targets) {
  NoGradGuard no_grad;
  const bool was_training = model_.is_training();
  model_.eval();
  const ModelConfig& c = model_.config();
  const Device device = model_.device();
  Tensor x;
  if (is_first()) {
    x = model_.embed(inputs.to(device));
  } else {
    x = empty({inputs.size(0), inputs.size(1), c.dim}, {.dtype = params_.front().second.dtype(), .device = device});
    group_->recv(x, static_cast<int>(stage_ - 1), kForwardTag);
  }
  x = model_.blocks(x, begin_, end_);
  double sum = 0;
  if (!is_last()) {
    group_->send(x.contiguous(), static_cast<int>(stage_ + 1), kForwardTag);
  } else {
    const Tensor logits = model_.head(x);
    const Tensor flat = targets.reshape({-1});
    sum = cross_entropy(logits.view({-1, logits.size(-1)}), flat.to(device)).item<double>() *
          static_cast<double>(flat.numel());
  }
  model_.train(was_training);
  return sum;
}

Tensor PipelineStage::decode(const std::vector<int64_t>& ids, KVCache& cache) {
  NoGradGuard no_grad;
  const bool was_training = model_.is_training();
  model_.eval();
  const ModelConfig& c = model_.config();
  const Device device = model_.device();
  const auto n = static_cast<int64_t>(ids.size());
  const int64_t start = cache.length;
  Tensor x;
  if (is_first()) {
    x = model_.embed(from_data<int64_t>(ids, {1, n}, {.dtype = DType::i64, .device = device}), start);
  } else {
    x = empty({1, n, c.dim}, {.dtype = params_.front().second.dtype(), .device = device});
    group_->recv(x, static_cast<int>(stage_ - 1), kForwardTag);
  }
  x = model_.blocks(x, begin_, end_, &cache, start);
  cache.length += n;
  Tensor last;
  if (!is_last()) {
    group_->send(x.contiguous(), static_cast<int>(stage_ + 1), kForwardTag);
  } else {
    const Tensor logits = model_.head(x);
    last = logits.select(0, 0).select(0, n - 1).to(Device::cpu());
  }
  model_.train(was_training);
  return last;
}

void write_chrome_trace(const std::string& path, ProcessGroup& group, const std::vector<PipelineSpan>& spans,
                        const std::string& label) {
  nlohmann::json events = nlohmann::json::array();
  const int rank = group.rank();
  events.push_back({{"name", "process_name"}, {"ph", "M"}, {"pid", rank}, {"args", {{"name", label}}}});
  events.push_back({{"name", "process_sort_index"}, {"ph", "M"}, {"pid", rank}, {"args", {{"sort_index", rank}}}});
  for (const PipelineSpan& s : spans)
    events.push_back({{"name", s.name}, {"cat", s.category}, {"ph", "X"}, {"pid", rank}, {"tid", 0},
                      {"ts", s.start_us}, {"dur", s.duration_us}});
  const std::string mine = events.dump();
  Tensor size = from_data<int64_t>({static_cast<int64_t>(mine.size())});
  Tensor sizes = zeros({group.size()}, {.dtype = DType::i64});
  group.all_gather(size, sizes);
  if (rank != 0) {
    Tensor bytes = from_data<uint8_t>(std::vector<uint8_t>(mine.begin(), mine.end()));
    group.send(bytes, 0, kTiedTag + 1);
    return;
  }
  nlohmann::json all = nlohmann::json::array();
  for (int r = 0; r < group.size(); ++r) {
    std::string text = mine;
    if (r != 0) {
      Tensor bytes = empty({sizes.data<int64_t>()[r]}, {.dtype = DType::u8});
      group.recv(bytes, r, kTiedTag + 1);
      text.assign(reinterpret_cast<const char*>(bytes.data<uint8_t>()), static_cast<size_t>(bytes.numel()));
    }
    for (auto& e : nlohmann::json::parse(text)) all.push_back(std::move(e));
  }
  std::ofstream out(path, std::ios::binary);
  out << nlohmann::json{{"traceEvents", all}, {"displayTimeUnit", "ms"}}.dump();
  TSU_CHECK(out.good(), IOError, "[trace] cannot write {}", path);
}

}  // namespace tsumugi
