// tsumugi tokenizer train / encode / decode.
#include <tsumugi/core/error.h>
#include <tsumugi/data/documents.h>
#include <tsumugi/tokenizer/tokenizer.h>
#include <tsumugi/tokenizer/trainer.h>

#include <fmt/format.h>

#include <iostream>
#include <memory>
#include <sstream>

#include "data_commands.h"

namespace tsumugi::cli {
namespace {

struct TrainCommand {
  std::vector<std::string> inputs;
  std::string out;
  std::string text_field = "text";
  int32_t vocab_size = 8000;
  int32_t kanji = 2500;
  std::string ipadic = kDebianIpadicDir;
  bool no_seed = false;
  int threads = 0;
  uint64_t max_lines = 0;
  double coverage = 0.9995;
  bool verbose = false;
};

struct CodecCommand {
  std::string model;
  std::vector<std::string> args;
  bool pieces = false;
};

void run_train(const TrainCommand& command) {
  TokenizerTrainOptions options;
  options.model_prefix = command.out;
  options.vocab_size = command.vocab_size;
  options.num_threads = command.threads;
  options.max_lines = command.max_lines;
  options.character_coverage = command.coverage;
  options.verbose = command.verbose;
  if (!command.no_seed) {
    const std::string kanji = command.kanji > 0 ? common_kanji_from_ipadic(command.ipadic, command.kanji) : "";
    options.required_chars = kana_alphabet() + kanji;
    fmt::print(stderr, "tokenizer: alphabet seeded with kana and {} kanji from {}\n", command.kanji, command.ipadic);
  }
  DocumentReader reader(expand_input_paths(command.inputs), {.text_field = command.text_field});
  Document document;
  const TokenizerTrainResult result = train_tokenizer(options, [&](std::string& text) {
    if (!reader.next(document)) return false;
    text = std::move(document.text);
    return true;
  });
  const Tokenizer tokenizer = Tokenizer::load(result.model_path);
  fmt::print("tokenizer: {}\n", result.model_path);
  fmt::print("  pieces     {}\n", tokenizer.vocab_size());
  fmt::print("  trained on {} documents, {} lines, {}\n", with_commas(result.documents), with_commas(result.lines),
             human_bytes(static_cast<double>(result.bytes)));
  fmt::print("  time       {:.1f} s\n", result.seconds);
  fmt::print("  sha256     {}\n", tokenizer.sha256());
}

// Arguments, or when there are none, the lines of standard input.
std::vector<std::string> inputs_or_stdin(const std::vector<std::string>& args) {
  if (!args.empty()) return args;
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(std::cin, line)) lines.push_back(line);
  return lines;
}

}  // namespace

void add_tokenizer_command(CLI::App& app) {
  CLI::App* tokenizer = app.add_subcommand("tokenizer", "Train and use SentencePiece tokenizers");
  tokenizer->require_subcommand(1);

  auto train = std::make_shared<TrainCommand>();
  CLI::App* train_app = tokenizer->add_subcommand(
      "train", "Train a unigram tokenizer (byte fallback, split digits, lossless) on .jsonl/.txt files");
  train_app->add_option("inputs", train->inputs, "Corpus files or folders (.jsonl, .txt, optionally .gz/.zst)")
      ->required();
  train_app->add_option("--out", train->out, "Model prefix: writes PREFIX.model and PREFIX.vocab")->required();
  train_app->add_option("--vocab-size", train->vocab_size, "Pieces in the vocabulary")->capture_default_str();
  train_app->add_option("--text-field", train->text_field, "JSON field holding the text")->capture_default_str();
  train_app->add_option("--kanji", train->kanji, "Most common kanji always in the alphabet")->capture_default_str();
  train_app->add_option("--ipadic", train->ipadic, "MeCab IPADIC source folder (EUC-JP CSVs) to rank kanji")
      ->capture_default_str();
  train_app->add_flag("--no-seed", train->no_seed, "Do not seed the alphabet with kana and kanji");
  train_app->add_option("--threads", train->threads, "Training threads (default: all cores)");
  train_app->add_option("--max-lines", train->max_lines, "Sample at most this many lines (default: all)");
  train_app->add_option("--coverage", train->coverage, "Character coverage of the alphabet")->capture_default_str();
  train_app->add_flag("--verbose", train->verbose, "Print SentencePiece's training log");
  train_app->callback([train] { run_train(*train); });

  auto encode = std::make_shared<CodecCommand>();
  CLI::App* encode_app = tokenizer->add_subcommand("encode", "Print the token ids (or pieces) of each text");
  encode_app->add_option("--model", encode->model, "SentencePiece model")->required();
  encode_app->add_flag("--pieces", encode->pieces, "Print pieces instead of ids");
  encode_app->add_option("texts", encode->args, "Texts (default: each line of standard input)");
  encode_app->callback([encode] {
    const Tokenizer tokenizer = Tokenizer::load(encode->model);
    for (const auto& text : inputs_or_stdin(encode->args)) {
      if (encode->pieces) {
        fmt::print("{}\n", fmt::join(tokenizer.encode_pieces(text), " "));
      } else {
        fmt::print("{}\n", fmt::join(tokenizer.encode(text), " "));
      }
    }
  });

  auto decode = std::make_shared<CodecCommand>();
  CLI::App* decode_app = tokenizer->add_subcommand("decode", "Print the text of token ids");
  decode_app->add_option("--model", decode->model, "SentencePiece model")->required();
  decode_app->add_option("ids", decode->args, "Ids (default: each line of standard input is one sequence)");
  decode_app->callback([decode] {
    const Tokenizer tokenizer = Tokenizer::load(decode->model);
    const auto sequences = decode->args.empty() ? inputs_or_stdin({}) : std::vector{fmt::format("{}", fmt::join(decode->args, " "))};
    for (const auto& sequence : sequences) {
      std::istringstream stream(sequence);
      std::vector<int32_t> ids;
      std::string word;
      while (stream >> word) {
        try {
          ids.push_back(std::stoi(word));
        } catch (const std::exception&) {
          throw ValueError(fmt::format("[tokenizer decode] \"{}\" is not a token id", word));
        }
      }
      fmt::print("{}\n", tokenizer.decode(ids));
    }
  });
}

}  // namespace tsumugi::cli
