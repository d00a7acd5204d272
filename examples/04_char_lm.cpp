// Lesson 4: a character-level Japanese language model.
//
// We train a tiny GPT-2 on a short Japanese text (the iroha poem, public domain, and a story
// written for this lesson), one character per token, then let it write. After a minute of
// training on a CPU it has learned the characters, common words and the rhythm of the text.
#include <tsumugi/tsumugi.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

using namespace tsumugi;

namespace {

const char* kText = R"(いろはにほへと ちりぬるを わかよたれそ つねならむ うゐのおくやま けふこえて あさきゆめみし ゑひもせす
むかしむかし、山のふもとの小さな村に、糸をつむぐおばあさんが住んでいました。おばあさんは毎朝早く起きて、綿から細い糸をつむぎました。春には桜の花を見ながら、夏には川の音を聞きながら、秋には赤い葉を眺めながら、冬には雪の白さを思いながら、糸をつむぎました。
村の子どもたちは、おばあさんの家に集まって、糸車の回る音を聞くのが好きでした。「おばあさん、どうして毎日糸をつむぐの」と子どもがたずねると、おばあさんはにっこり笑って答えました。「一本の糸は弱いけれど、たくさんの糸をより合わせると、強い布になるのよ。人も同じ。ひとりでは小さくても、みんなで力を合わせれば、大きなことができるの」
子どもたちはその話をよく覚えていました。やがて子どもたちは大人になり、村を出て、遠い町で働くようになりました。けれども、つらいときには、いつもおばあさんの言葉を思い出しました。一本の糸は弱いけれど、より合わせると強くなる。
ある年の春、大人になった子どもたちが村に帰ってきました。おばあさんの家には、まだ糸車がありました。みんなは糸車を囲んで、昔のように糸をつむぎました。その糸で織った布は、とても温かく、とても強いものでした。
)";

// UTF-8 text <-> Unicode code points.
std::vector<char32_t> decode_utf8(const std::string& s) {
  std::vector<char32_t> out;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const int length = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    char32_t cp = length == 1 ? c : c & (0xFF >> (length + 1));
    for (int k = 1; k < length; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    out.push_back(cp);
    i += static_cast<size_t>(length);
  }
  return out;
}

std::string encode_utf8(char32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

}  // namespace

int main() {
  const auto start = std::chrono::steady_clock::now();

  // 1. The vocabulary: every distinct character gets an id.
  const std::vector<char32_t> chars = decode_utf8(kText);
  std::map<char32_t, int32_t> id_of;
  for (char32_t c : chars) id_of.emplace(c, 0);
  std::vector<char32_t> char_of;
  for (auto& [c, id] : id_of) {
    id = static_cast<int32_t>(char_of.size());
    char_of.push_back(c);
  }
  std::vector<int32_t> ids;
  for (char32_t c : chars) ids.push_back(id_of[c]);
  const int64_t vocab = static_cast<int64_t>(char_of.size());
  std::printf("text: %zu characters, %lld distinct\n", chars.size(), static_cast<long long>(vocab));

  // 2. A small GPT-2: 3 blocks, 4 heads, width 96, 64 characters of context.
  ModelConfig config{.arch = Arch::gpt2, .layers = 3, .heads = 4, .dim = 96, .vocab = vocab, .context = 64};
  auto model = make_model(config);
  model->init_weights(/*seed=*/0);
  std::printf("model: %.2f M parameters\n", model->num_parameters() / 1e6);

  // 3. Training: each step takes 16 random windows of 65 characters; the model predicts
  //    characters 1..64 from characters 0..63. The learning rate decays along a cosine.
  constexpr int kSteps = 400;
  constexpr int64_t kBatch = 16, kLength = 64;
  AdamW optimizer(model->named_parameters(), {.lr = 3e-3, .beta1 = 0.9, .beta2 = 0.95, .weight_decay = 0.01});
  Generator gen(1);
  for (int step = 0; step < kSteps; ++step) {
    const auto starts = randint(0, static_cast<int64_t>(ids.size()) - kLength - 1, {kBatch}, gen).to_vector<int32_t>();
    std::vector<int32_t> window;
    for (int32_t s : starts) window.insert(window.end(), ids.begin() + s, ids.begin() + s + kLength + 1);
    const Tensor batch = from_data<int32_t>(window, {kBatch, kLength + 1});
    const Tensor inputs = batch.narrow(1, 0, kLength).contiguous();
    const Tensor targets = batch.narrow(1, 1, kLength).contiguous().view({-1});

    optimizer.set_lr(3e-3 * 0.5 * (1 + std::cos(M_PI * step / kSteps)));
    Tensor loss = cross_entropy(model->forward(inputs).view({-1, vocab}), targets);
    loss.backward();
    clip_grad_norm(model->parameters(), 1.0);
    optimizer.step();
    optimizer.zero_grad();
    if (step % 100 == 0 || step == kSteps - 1)
      std::printf("step %3d  loss %.3f  (%.2f bits per character)\n", step, loss.item<float>(),
                  loss.item<float>() / std::log(2.0f));
  }

  // 4. Writing: feed a prompt, then sample one character at a time from the softmax of the
  //    last logits (temperature 0.8). The KV cache keeps earlier keys and values, so each new
  //    character costs one position, not the whole prefix.
  model->eval();
  NoGradGuard no_grad;
  const std::string prompt = "むかしむかし、";
  std::vector<int32_t> context;
  for (char32_t c : decode_utf8(prompt)) context.push_back(id_of.at(c));
  std::string written = prompt;
  KVCache cache;
  Tensor logits = model->forward(from_data<int32_t>(context, {1, static_cast<int64_t>(context.size())}), &cache);
  for (int i = 0; i < 160; ++i) {
    const Tensor probs = softmax(logits.select(1, logits.size(1) - 1) * (1.0 / 0.8), -1);
    const std::vector<float> p = probs.to_vector<float>();
    float u = rand({1}, gen).item<float>();
    int32_t next = 0;
    while (next + 1 < vocab && u >= p[static_cast<size_t>(next)]) u -= p[static_cast<size_t>(next++)];
    written += encode_utf8(char_of[static_cast<size_t>(next)]);
    context.push_back(next);
    if (cache.length == config.context) {  // the context is full: start again from the last 32 characters
      cache = KVCache();
      std::vector<int32_t> tail(context.end() - 32, context.end());
      logits = model->forward(from_data<int32_t>(tail, {1, 32}), &cache);
    } else {
      logits = model->forward(from_data<int32_t>({next}, {1, 1}), &cache);
    }
  }
  std::printf("\nthe model writes:\n%s\n", written.c_str());
  std::printf("\n(%.1f s)\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return 0;
}
