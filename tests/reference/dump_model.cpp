// Writes a small random GPT-2 or Llama (weights with Hugging Face names), token ids, and
// tsumugi's float32 logits and loss, for compare.py to check against an independent float64
// NumPy implementation. Usage: dump_model gpt2|llama OUT_DIR
#include <tsumugi/tsumugi.h>

#include <cstdio>
#include <fstream>
#include <string>

using namespace tsumugi;

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: dump_model gpt2|llama OUT_DIR\n");
    return 2;
  }
  const std::string dir = argv[2];
  ModelConfig c;
  c.arch = parse_arch(argv[1]);
  c.layers = 2;
  c.heads = 4;
  c.kv_heads = c.arch == Arch::llama ? 2 : 0;
  c.dim = 32;
  c.ffn_dim = c.arch == Arch::llama ? 48 : 0;
  c.vocab = 101;
  c.context = 40;
  c.rope_theta = 500.0;
  c.norm_eps = c.arch == Arch::llama ? 1e-6 : 1e-5;
  c.tied_embeddings = c.arch == Arch::gpt2;
  c.init_std = 0.3;  // large weights, so that every nonlinearity matters
  auto model = make_model(c);
  model->init_weights(1);
  {
    NoGradGuard no_grad;  // non-trivial norm weights and biases too
    Generator gen(2);
    for (auto& [name, p] : model->named_parameters())
      if (p.dim() == 1) p.copy_(p + randn(p.shape(), gen, {}, 0.0, 0.2));
  }
  Generator gen(3);
  const Tensor ids = randint(0, c.vocab, {2, 33}, gen);
  const Tensor inputs = ids.narrow(1, 0, 32).contiguous(), targets = ids.narrow(1, 1, 32).contiguous();
  NoGradGuard no_grad;
  const Tensor logits = model->forward(inputs);
  const Tensor loss = cross_entropy(logits.view({-1, c.vocab}), targets.view({-1}));
  save_safetensors(dir + "/model.safetensors", model->state_dict());
  save_safetensors(dir + "/outputs.safetensors",
                   {{"inputs", inputs}, {"targets", targets}, {"logits", logits}, {"loss", loss.view({1})}});
  const ModelConfig r = model->config();
  std::ofstream(dir + "/config.json")
      << "{\"arch\": \"" << arch_name(r.arch) << "\", \"layers\": " << r.layers << ", \"heads\": " << r.heads
      << ", \"kv_heads\": " << r.kv_heads << ", \"dim\": " << r.dim << ", \"ffn_dim\": " << r.ffn_dim
      << ", \"vocab\": " << r.vocab << ", \"rope_theta\": " << r.rope_theta << ", \"norm_eps\": " << r.norm_eps
      << ", \"tied\": " << (r.tied_embeddings ? "true" : "false") << "}\n";
  return 0;
}
