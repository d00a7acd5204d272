// Recipes: a table of every key (name, type, help, how to read and write it) drives parsing,
// overrides, validation messages and the printed effective configuration.
#include <tsumugi/train/config.h>

#include <toml++/toml.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <sstream>
#include <variant>

#include "core/check.h"
#include "data/text_util.h"

namespace tsumugi {
namespace {

using Value = std::variant<int64_t, double, bool, std::string>;

struct Field {
  std::string name;  // "section.key"
  std::string type;  // int | float | bool | string
  std::string help;
  std::function<void(TrainConfig&, const Value&)> set;
  std::function<Value(const TrainConfig&)> get;
  std::vector<std::string> choices;  // allowed strings, when restricted
};

template <class S, class T>
Field make_field(std::string name, S TrainConfig::*section, T S::*member, std::string help,
                 std::vector<std::string> choices = {}) {
  Field f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.choices = std::move(choices);
  if constexpr (std::is_same_v<T, bool>) f.type = "bool";
  else if constexpr (std::is_integral_v<T>) f.type = "int";
  else if constexpr (std::is_floating_point_v<T>) f.type = "float";
  else f.type = "string";
  f.set = [section, member](TrainConfig& c, const Value& v) {
    if constexpr (std::is_same_v<T, bool>) (c.*section).*member = std::get<bool>(v);
    else if constexpr (std::is_integral_v<T>) (c.*section).*member = static_cast<T>(std::get<int64_t>(v));
    else if constexpr (std::is_floating_point_v<T>) (c.*section).*member = std::get<double>(v);
    else (c.*section).*member = std::get<std::string>(v);
  };
  f.get = [section, member](const TrainConfig& c) -> Value {
    const T& v = (c.*section).*member;
    if constexpr (std::is_same_v<T, bool>) return v;
    else if constexpr (std::is_integral_v<T>) return static_cast<int64_t>(v);
    else if constexpr (std::is_floating_point_v<T>) return static_cast<double>(v);
    else return v;
  };
  return f;
}

const std::vector<Field>& fields() {
  using C = TrainConfig;
  static const std::vector<Field> all = [] {
    std::vector<Field> f;
    Field arch;
    arch.name = "model.arch";
    arch.type = "string";
    arch.help = "gpt2 (LayerNorm, GELU, learned positions) or llama (RMSNorm, RoPE, SwiGLU, GQA)";
    arch.choices = {"gpt2", "llama"};
    arch.set = [](C& c, const Value& v) { c.model.arch = parse_arch(std::get<std::string>(v)); };
    arch.get = [](const C& c) -> Value { return std::string(arch_name(c.model.arch)); };
    f.push_back(arch);
    f.push_back(make_field("model.layers", &C::model, &ModelConfig::layers, "transformer blocks"));
    f.push_back(make_field("model.heads", &C::model, &ModelConfig::heads, "attention heads"));
    f.push_back(make_field("model.kv_heads", &C::model, &ModelConfig::kv_heads, "key/value heads (0: same as heads)"));
    f.push_back(make_field("model.dim", &C::model, &ModelConfig::dim, "model width"));
    f.push_back(make_field("model.ffn_dim", &C::model, &ModelConfig::ffn_dim, "MLP width (0: 4 dim for gpt2, ~8/3 dim for llama)"));
    f.push_back(make_field("model.vocab", &C::model, &ModelConfig::vocab, "vocabulary size (0: the tokenizer's)"));
    f.push_back(make_field("model.context", &C::model, &ModelConfig::context, "longest sequence the model accepts"));
    f.push_back(make_field("model.rope_theta", &C::model, &ModelConfig::rope_theta, "rotary embedding base (llama)"));
    f.push_back(make_field("model.norm_eps", &C::model, &ModelConfig::norm_eps, "epsilon of LayerNorm / RMSNorm"));
    f.push_back(make_field("model.tied_embeddings", &C::model, &ModelConfig::tied_embeddings, "output head shares the token embedding"));
    f.push_back(make_field("model.init_std", &C::model, &ModelConfig::init_std, "std of the initial weights"));
    f.push_back(make_field("model.dropout", &C::model, &ModelConfig::dropout, "dropout on embeddings and residual branches"));
    f.push_back(make_field("data.train", &C::data, &DataConfig::train, "folder of training shards"));
    f.push_back(make_field("data.valid", &C::data, &DataConfig::valid, "folder of validation shards (\"\": none)"));
    f.push_back(make_field("data.tokenizer", &C::data, &DataConfig::tokenizer, "SentencePiece model of the shards"));
    f.push_back(make_field("data.seq_len", &C::data, &DataConfig::seq_len, "tokens per training sequence"));
    f.push_back(make_field("data.seed", &C::data, &DataConfig::seed, "seed of the sample order"));
    f.push_back(make_field("train.steps", &C::train, &TrainSettings::steps, "optimizer steps"));
    f.push_back(make_field("train.global_batch", &C::train, &TrainSettings::global_batch, "sequences per step, all ranks"));
    f.push_back(make_field("train.micro_batch", &C::train, &TrainSettings::micro_batch, "sequences per forward/backward on one rank"));
    f.push_back(make_field("train.lr", &C::train, &TrainSettings::lr, "peak learning rate"));
    f.push_back(make_field("train.min_lr", &C::train, &TrainSettings::min_lr, "learning rate at the end of the decay"));
    f.push_back(make_field("train.schedule", &C::train, &TrainSettings::schedule, "after warm-up: cosine | wsd | linear | constant",
                           {"cosine", "wsd", "linear", "constant"}));
    f.push_back(make_field("train.warmup_steps", &C::train, &TrainSettings::warmup_steps, "linear warm-up steps"));
    f.push_back(make_field("train.decay_fraction", &C::train, &TrainSettings::decay_fraction, "wsd: share of steps in the final decay"));
    f.push_back(make_field("train.weight_decay", &C::train, &TrainSettings::weight_decay, "AdamW weight decay (2-D parameters)"));
    f.push_back(make_field("train.beta1", &C::train, &TrainSettings::beta1, "AdamW beta1"));
    f.push_back(make_field("train.beta2", &C::train, &TrainSettings::beta2, "AdamW beta2"));
    f.push_back(make_field("train.eps", &C::train, &TrainSettings::eps, "AdamW epsilon"));
    f.push_back(make_field("train.grad_clip", &C::train, &TrainSettings::grad_clip, "clip the global gradient norm (0: off)"));
    f.push_back(make_field("train.z_loss", &C::train, &TrainSettings::z_loss, "z-loss coefficient (0: off)"));
    f.push_back(make_field("train.seed", &C::train, &TrainSettings::seed, "weight initialisation seed"));
    f.push_back(make_field("train.max_minutes", &C::train, &TrainSettings::max_minutes, "stop with a checkpoint after this many minutes (0: no limit)"));
    f.push_back(make_field("train.on_nonfinite", &C::train, &TrainSettings::on_nonfinite, "non-finite loss or gradient: skip | stop",
                           {"skip", "stop"}));
    f.push_back(make_field("train.spike_zscore", &C::train, &TrainSettings::spike_zscore,
                           "loss spike: above mean + z * std of the last spike_window losses (0: off)"));
    f.push_back(make_field("train.spike_window", &C::train, &TrainSettings::spike_window, "steps in the loss-spike window"));
    f.push_back(make_field("train.on_spike", &C::train, &TrainSettings::on_spike, "loss spike: skip | stop | log",
                           {"skip", "stop", "log"}));
    f.push_back(make_field("parallel.dp", &C::parallel, &ParallelConfig::dp, "data-parallel degree (0: world / pp)"));
    f.push_back(make_field("parallel.pp", &C::parallel, &ParallelConfig::pp, "pipeline stages"));
    f.push_back(make_field("parallel.schedule", &C::parallel, &ParallelConfig::schedule, "pipeline schedule: gpipe | 1f1b", {"gpipe", "1f1b"}));
    f.push_back(make_field("parallel.stage_layers", &C::parallel, &ParallelConfig::stage_layers, "blocks per pipeline stage, \"6,6,4\" (\"\": balanced by compute)"));
    f.push_back(make_field("parallel.zero", &C::parallel, &ParallelConfig::zero, "0: replicated optimizer state, 1: sharded (ZeRO-1)"));
    f.push_back(make_field("parallel.deterministic", &C::parallel, &ParallelConfig::deterministic, "identical bits for any rank count and micro-batch split"));
    f.push_back(make_field("parallel.threads", &C::parallel, &ParallelConfig::threads, "CPU threads per rank (0: cores / local ranks)"));
    f.push_back(make_field("parallel.blas_threads", &C::parallel, &ParallelConfig::blas_threads, "BLAS threads per rank (0: threads; deterministic: 1)"));
    f.push_back(make_field("parallel.gpu_comm", &C::parallel, &ParallelConfig::gpu_comm, "data parallelism on GPUs: nccl (a GPU per rank) | mpi (through host memory; ranks may share a GPU)", {"nccl", "mpi"}));
    f.push_back(make_field("precision.compute", &C::precision, &PrecisionConfig::compute, "f32 | bf16 | f16 (bf16, f16: CUDA)", {"f32", "bf16", "f16"}));
    f.push_back(make_field("checkpoint.dir", &C::checkpoint, &CheckpointConfig::dir, "run directory"));
    f.push_back(make_field("checkpoint.every", &C::checkpoint, &CheckpointConfig::every, "save every N steps (0: only at the end)"));
    f.push_back(make_field("checkpoint.keep", &C::checkpoint, &CheckpointConfig::keep, "keep the newest K checkpoints"));
    f.push_back(make_field("eval.every", &C::eval, &EvalConfig::every, "evaluate every N steps (0: only at the end)"));
    f.push_back(make_field("eval.batches", &C::eval, &EvalConfig::batches, "validation batches per evaluation (0: all)"));
    f.push_back(make_field("eval.sample_every", &C::eval, &EvalConfig::sample_every, "print a sample every N steps (0: never)"));
    f.push_back(make_field("eval.prompt", &C::eval, &EvalConfig::prompt, "prompt of the samples"));
    f.push_back(make_field("eval.sample_tokens", &C::eval, &EvalConfig::sample_tokens, "tokens per sample"));
    f.push_back(make_field("eval.temperature", &C::eval, &EvalConfig::temperature, "sampling temperature"));
    f.push_back(make_field("eval.top_k", &C::eval, &EvalConfig::top_k, "sample from the k most likely tokens (0: off)"));
    f.push_back(make_field("eval.top_p", &C::eval, &EvalConfig::top_p, "nucleus sampling mass (1: off)"));
    f.push_back(make_field("log.every", &C::log, &LogConfig::every, "progress line every N steps"));
    f.push_back(make_field("log.trace", &C::log, &LogConfig::trace, "Chrome trace file of the first log.trace_steps steps (\"\": none)"));
    f.push_back(make_field("log.trace_steps", &C::log, &LogConfig::trace_steps, "steps the trace covers"));
    f.push_back(make_field("device.type", &C::device, &DeviceConfig::type, "cpu | cuda", {"cpu", "cuda"}));
    return f;
  }();
  return all;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// Names other tools use for our keys (nanoGPT, Megatron-LM, Hugging Face).
const std::pair<const char*, const char*> kAliases[] = {
    {"learning_rate", "train.lr"},     {"max_lr", "train.lr"},           {"batch_size", "train.global_batch"},
    {"max_steps", "train.steps"},      {"train_iters", "train.steps"},   {"max_iters", "train.steps"},
    {"warmup", "train.warmup_steps"},  {"warmup_iters", "train.warmup_steps"},
    {"micro_batch_size", "train.micro_batch"}, {"clip_grad", "train.grad_clip"},
    {"n_layer", "model.layers"},       {"num_layers", "model.layers"},   {"num_hidden_layers", "model.layers"},
    {"n_head", "model.heads"},         {"num_attention_heads", "model.heads"}, {"num_key_value_heads", "model.kv_heads"},
    {"n_embd", "model.dim"},           {"hidden_size", "model.dim"},     {"intermediate_size", "model.ffn_dim"},
    {"vocab_size", "model.vocab"},     {"block_size", "data.seq_len"},   {"seq_length", "data.seq_len"},
    {"max_position_embeddings", "model.context"}};

std::string closest_key(const std::string& name) {
  // No key is longer than this; a longer name is no typo of one (and edit distances would cost
  // time quadratic in a name that may come from a file).
  constexpr size_t kLongestTypo = 64;
  if (name.size() > kLongestTypo) return "";
  {
    const auto dot = name.find('.');
    const std::string key = dot == std::string::npos ? name : name.substr(dot + 1);
    for (const auto& [alias, target] : kAliases)
      if (key == alias) return target;
  }
  // Edit distance of the whole name; a key that contains the given key (or is contained in it)
  // counts as one edit, so "warmup" suggests "warmup_steps"; a top-level key is compared with
  // the key part alone.
  const auto dot = name.find('.');
  const std::string key = dot == std::string::npos ? name : name.substr(dot + 1);
  const Field* best = nullptr;
  size_t best_distance = SIZE_MAX;
  for (const Field& f : fields()) {
    const std::string f_key = f.name.substr(f.name.find('.') + 1);
    size_t d = dot == std::string::npos ? edit_distance(key, f_key) : edit_distance(name, f.name);
    const bool same_section = dot != std::string::npos && f.name.compare(0, dot + 1, name, 0, dot + 1) == 0;
    if ((same_section || dot == std::string::npos) && key.size() >= 3 &&
        (f_key.find(key) != std::string::npos || key.find(f_key) != std::string::npos))
      d = std::min<size_t>(d, 1);
    if (d < best_distance) {
      best_distance = d;
      best = &f;
    }
  }
  return best ? best->name : "";
}

const Field& find_field(const std::string& name, const std::string& origin) {
  for (const Field& f : fields())
    if (f.name == name) return f;
  const std::string suggestion = closest_key(name);
  TSU_FAIL(ConfigError, "[config] {}: unknown key '{}'{}", origin, name,
           suggestion.empty() ? "" : fmt::format(" (did you mean '{}'?)", suggestion));
}

std::string describe(const toml::node& node) {
  std::ostringstream out;
  if (node.is_string()) out << '"' << node.as_string()->get() << '"';
  else if (node.is_table()) out << "a table";
  else if (node.is_array()) out << "an array";
  else node.visit([&](auto&& v) { out << v; });
  return out.str();
}

void set_from_node(TrainConfig& config, const Field& f, const toml::node& node, const std::string& origin) {
  auto wrong = [&] {
    TSU_FAIL(ConfigError, "[config] {}: {} must be {} {}, got {}", origin, f.name, f.type == "int" ? "an" : "a", f.type,
             describe(node));
  };
  Value v;
  if (f.type == "int") {
    if (!node.is_integer()) wrong();
    v = node.as_integer()->get();
  } else if (f.type == "float") {
    if (node.is_integer()) v = static_cast<double>(node.as_integer()->get());
    else if (node.is_floating_point()) v = node.as_floating_point()->get();
    else wrong();
  } else if (f.type == "bool") {
    if (!node.is_boolean()) wrong();
    v = node.as_boolean()->get();
  } else {
    if (!node.is_string()) wrong();
    v = node.as_string()->get();
  }
  if (!f.choices.empty()) {
    const std::string& s = std::get<std::string>(v);
    TSU_CHECK(std::find(f.choices.begin(), f.choices.end(), s) != f.choices.end(), ConfigError,
              "[config] {}: {} = \"{}\" is not one of {}", origin, f.name, s, fmt::join(f.choices, ", "));
  }
  f.set(config, v);
}

std::string value_to_toml(const Value& v) {
  if (const auto* i = std::get_if<int64_t>(&v)) return std::to_string(*i);
  if (const auto* d = std::get_if<double>(&v)) {
    std::string s = fmt::format("{}", *d);
    if (s.find_first_of(".einf") == std::string::npos) s += ".0";
    return s;
  }
  if (const auto* b = std::get_if<bool>(&v)) return *b ? "true" : "false";
  std::ostringstream out;
  out << toml::value<std::string>(std::get<std::string>(v));
  return out.str();
}

TrainConfig defaults() {
  TrainConfig c;
  c.model.vocab = 0;  // from the tokenizer unless the recipe says otherwise
  c.model.context = 256;
  return c;
}

}  // namespace

std::vector<ConfigKey> config_keys() {
  std::vector<ConfigKey> keys;
  for (const Field& f : fields()) keys.push_back({f.name, f.type, f.help});
  return keys;
}

void apply_override(TrainConfig& config, const std::string& assignment) {
  const auto eq = assignment.find('=');
  TSU_CHECK(eq != std::string::npos, ConfigError, "[config] override '{}' is not of the form section.key=value",
            assignment);
  const std::string name = assignment.substr(0, eq);
  const std::string text = assignment.substr(eq + 1);
  const std::string origin = "--set " + name;
  const Field& f = find_field(name, origin);
  if (f.type == "string") {  // strings need no quotes on the command line
    std::string s = text;
    if (s.size() >= 2 && s.front() == '"' && s.back() == '"') s = s.substr(1, s.size() - 2);
    // A recipe file is UTF-8 (TOML); so must be an override, which is saved into trainer.json.
    const size_t bad = data_internal::find_invalid_utf8(s);
    TSU_CHECK(bad == std::string::npos, ConfigError, "[config] {}: the value is not valid UTF-8 (byte {})", origin,
              bad + 1);
    set_from_node(config, f, toml::value<std::string>(s), origin);
    return;
  }
  toml::table parsed;
  try {
    parsed = toml::parse("value = " + text);
  } catch (const toml::parse_error&) {
    TSU_FAIL(ConfigError, "[config] {}: '{}' is not a valid {}", origin, text, f.type);
  }
  set_from_node(config, f, *parsed.get("value"), origin);
}

TrainConfig parse_config(const std::string& toml_text, const std::string& origin,
                         const std::vector<std::string>& overrides) {
  toml::table table;
  try {
    table = toml::parse(toml_text, origin);
  } catch (const toml::parse_error& e) {
    TSU_FAIL(ConfigError, "[config] {}:{}:{}: {}", origin, e.source().begin.line, e.source().begin.column,
             e.description());
  }
  TrainConfig config = defaults();
  for (const auto& [section, node] : table) {
    const std::string section_name(section.str());
    if (!node.is_table()) {
      const std::string suggestion = closest_key(section_name);
      TSU_FAIL(ConfigError, "[config] {}: '{}' must be a [section]{}", origin, section_name,
               suggestion.empty() ? "" : fmt::format(" (did you mean '{}'?)", suggestion));
    }
    for (const auto& [key, value] : *node.as_table()) {
      const std::string name = section_name + "." + std::string(key.str());
      set_from_node(config, find_field(name, origin), value, origin);
    }
  }
  for (const std::string& o : overrides) apply_override(config, o);
  validate_config(config);
  return config;
}

TrainConfig load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  TSU_CHECK(in.good(), IOError, "[config] cannot read recipe {}", path);
  std::ostringstream text;
  text << in.rdbuf();
  return parse_config(text.str(), path, overrides);
}

void validate_config(const TrainConfig& c) {
  auto require = [](bool ok, const std::string& key, const std::string& what) {
    if (!ok) TSU_FAIL(ConfigError, "[config] {} {}", key, what);
  };
  ModelConfig model = c.model;
  if (model.vocab == 0) model.vocab = 1;  // filled from the tokenizer later
  try {
    model.resolved();
  } catch (const ValueError& e) {
    TSU_FAIL(ConfigError, "[config] model: {}", e.what());
  }
  require(c.data.seq_len > 0, "data.seq_len", "must be positive");
  require(c.data.seq_len <= c.model.context, "data.seq_len",
          fmt::format("({}) must not exceed model.context ({})", c.data.seq_len, c.model.context));
  require(c.train.steps > 0, "train.steps", "must be positive");
  require(c.train.micro_batch > 0, "train.micro_batch", "must be positive");
  require(c.train.global_batch > 0 && c.train.global_batch % c.train.micro_batch == 0, "train.global_batch",
          fmt::format("({}) must be a positive multiple of train.micro_batch ({})", c.train.global_batch,
                      c.train.micro_batch));
  require(c.train.lr >= 0 && c.train.min_lr >= 0 && c.train.min_lr <= c.train.lr, "train.min_lr",
          "must lie between 0 and train.lr");
  require(c.train.warmup_steps >= 0, "train.warmup_steps", "must not be negative");
  require(c.train.decay_fraction > 0 && c.train.decay_fraction <= 1, "train.decay_fraction", "must be in (0, 1]");
  require(c.train.beta1 >= 0 && c.train.beta1 < 1 && c.train.beta2 >= 0 && c.train.beta2 < 1, "train.beta1/beta2",
          "must be in [0, 1)");
  require(c.train.eps > 0 && c.train.weight_decay >= 0 && c.train.grad_clip >= 0 && c.train.z_loss >= 0,
          "train.eps/weight_decay/grad_clip/z_loss", "must not be negative (eps positive)");
  require(c.train.max_minutes >= 0, "train.max_minutes", "must not be negative");
  require(c.train.spike_zscore >= 0, "train.spike_zscore", "must not be negative (0 turns detection off)");
  require(c.train.spike_window >= 2, "train.spike_window", "must be at least 2");
  require(c.parallel.dp >= 0 && c.parallel.pp >= 1, "parallel.dp/pp", "must be dp >= 0 and pp >= 1");
  require(c.parallel.zero == 0 || c.parallel.zero == 1, "parallel.zero", "must be 0 or 1");
  require(c.parallel.threads >= 0 && c.parallel.blas_threads >= 0, "parallel.threads", "must not be negative");
  require(c.checkpoint.every >= 0 && c.checkpoint.keep >= 1, "checkpoint.keep", "must be at least 1 (every >= 0)");
  require(!c.checkpoint.dir.empty(), "checkpoint.dir", "must not be empty");
  require(c.eval.every >= 0 && c.eval.batches >= 0 && c.eval.sample_every >= 0 && c.eval.sample_tokens >= 0,
          "eval.every/batches/sample_every/sample_tokens", "must not be negative");
  require(c.eval.temperature > 0 && c.eval.top_k >= 0 && c.eval.top_p > 0 && c.eval.top_p <= 1, "eval.temperature/top_k/top_p",
          "must be temperature > 0, top_k >= 0, 0 < top_p <= 1");
  require(c.log.every > 0, "log.every", "must be positive");
  require(c.log.trace_steps > 0, "log.trace_steps", "must be positive");
  require(c.parallel.pp == 1 || c.model.dropout == 0, "model.dropout",
          "must be 0 with parallel.pp > 1 (pipeline stages do not share the dropout generator yet)");
  require(c.parallel.pp <= c.model.layers, "parallel.pp",
          fmt::format("({}) must not exceed model.layers ({}): every stage needs a block", c.parallel.pp, c.model.layers));
  require(c.device.type == "cuda" || c.precision.compute == "f32", "precision.compute",
          "bf16 and f16 need device.type = \"cuda\"");
}

std::string config_to_toml(const TrainConfig& config) {
  std::string out;
  std::string section;
  for (const Field& f : fields()) {
    const auto dot = f.name.find('.');
    const std::string s = f.name.substr(0, dot);
    if (s != section) {
      out += fmt::format("{}[{}]\n", section.empty() ? "" : "\n", s);
      section = s;
    }
    out += fmt::format("{} = {}  # {}\n", f.name.substr(dot + 1), value_to_toml(f.get(config)), f.help);
  }
  return out;
}

}  // namespace tsumugi
