// Text generation from model.ts with libtorch: no Python at run time.
//
//   generate MODEL.ts [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K] [--seed S]
//
// It samples at temperature 0.8 like `make generate` (--temperature 0 is greedy, and so is a
// temperature so small that the scaled logits are not finite), and with the same --seed it draws
// the same characters. Each character is printed as it is generated; Ctrl-C ends the text there
// (a newline, exit status 130). The vocabulary (one UTF-8 string, index = id) and the
// block size travel inside model.ts as the extra files "vocab.txt" and "block_size.txt". The file
// is used only if its SHA-256 is the one model.json beside it records, so a damaged model or one
// from another export is refused. Built by `make cpp-generate` (python -m export.cpp) against the
// libtorch inside the torch wheel.
#include <torch/script.h>

#include <cmath>
#include <cstdio>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "sha256.h"

// Bad input ends the program with one line on stderr and exit status 2.
[[noreturn]] static void fail(const std::string& message) {
  std::cerr << "error: " << message << "\n";
  std::exit(2);
}

static std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path.string() + " cannot be read: check the path, or train and export first (make export)");
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

// All of `text` as a number, or a one-line error naming the flag.
template <typename T>
static T number(const std::string& flag, const std::string& text) {
  std::istringstream in(text);
  T value{};
  const bool negative = std::is_unsigned<T>::value && text.find('-') != std::string::npos;
  if (negative || !(in >> value) || !in.eof()) fail(flag + " takes a number, got '" + text + "'");
  return value;
}

// The SHA-256 that model.json records for the file `name`. A string search, not a JSON parser:
// `make export` writes the manifest in a fixed form ("sha256": {"model.ts": "<hex>", ...}).
static std::string recorded_sha256(const std::string& manifest, const std::string& name) {
  const size_t table = manifest.find("\"sha256\"");
  const size_t key = table == std::string::npos ? table : manifest.find("\"" + name + "\"", table);
  if (key == std::string::npos) return "";
  const size_t open = manifest.find('"', manifest.find(':', key));
  const size_t close = manifest.find('"', open + 1);
  return close == std::string::npos ? "" : manifest.substr(open + 1, close - open - 1);
}

// Set by Ctrl-C (SIGINT): the loop stops after the character it is computing.
static volatile std::sig_atomic_t interrupted = 0;
static void on_interrupt(int) { interrupted = 1; }

// The next token id from one position's logits: model/sample.py's pick_token, rule for rule.
// Greedy at temperature 0 and where logits / temperature is not finite (scaled_logits there):
// 1e-39 turns fp32 logits into infinities, whose softmax is NaN and would abort multinomial.
static int64_t pick_token(const torch::Tensor& logits, double temperature, bool top_k_given, long top_k) {
  if (temperature == 0) return logits.argmax().item<int64_t>();
  auto scaled = logits / temperature;
  if (!torch::isfinite(scaled).all().item<bool>()) return logits.argmax().item<int64_t>();
  if (top_k_given && top_k < scaled.numel()) {
    const auto kth = std::get<0>(torch::topk(scaled, top_k)).index({-1});
    scaled = scaled.masked_fill(scaled < kth, -INFINITY);
  }
  return torch::multinomial(torch::softmax(scaled, -1), 1).item<int64_t>();
}

// UTF-8 text as one string per character (a character is 1 to 4 bytes).
static std::vector<std::string> characters(const std::string& text) {
  std::vector<std::string> out;
  for (size_t i = 0; i < text.size();) {
    const unsigned char lead = static_cast<unsigned char>(text[i]);
    const size_t length = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
    out.push_back(text.substr(i, length));
    i += length;
  }
  return out;
}

// The position of the first byte of `text` that is not part of valid UTF-8, or npos.
static size_t invalid_utf8_at(const std::string& text) {
  for (size_t i = 0; i < text.size();) {
    const unsigned char lead = static_cast<unsigned char>(text[i]);
    const size_t length = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xE ? 3 : (lead >> 3) == 0x1E ? 4 : 0;
    if (length == 0 || i + length > text.size()) return i;
    for (size_t k = 1; k < length; ++k) {
      if ((static_cast<unsigned char>(text[i + k]) & 0xC0) != 0x80) return i;
    }
    i += length;
  }
  return std::string::npos;
}

// block_size.txt inside model.ts: a positive whole number in digits, or the file is not ours.
static size_t parsed_block_size(const std::string& text, const std::string& where) {
  size_t value = 0;
  if (!text.empty() && text.size() < 10 && text.find_first_not_of("0123456789") == std::string::npos) {
    value = std::stoul(text);  // digits only, fewer than 10: no exception, no overflow
  }
  if (value == 0) fail(where + " has a block_size.txt that is not a positive whole number: export it again with make export");
  return value;
}

int main(int argc, char** argv) {
  if (argc < 2 || argc % 2 != 0) {
    fail(std::string("usage: ") + argv[0] + " MODEL.ts [--prompt TEXT] [--tokens N] [--temperature T] [--top-k K] [--seed S]");
  }
  const std::filesystem::path model_path = argv[1];
  // The project's defaults (common/defaults.py; tests/unit/test_defaults.py holds them equal).
  std::string prompt = "ROMEO:";
  long tokens = 200, top_k = 0;  // without --top-k: all characters
  bool top_k_given = false;
  double temperature = 0.8;
  bool seeded = false;
  uint64_t seed = 0;
  for (int i = 2; i < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--prompt") prompt = value;
    else if (flag == "--tokens") tokens = number<long>(flag, value);
    else if (flag == "--temperature") temperature = number<double>(flag, value);
    else if (flag == "--top-k") top_k = number<long>(flag, value), top_k_given = true;
    else if (flag == "--seed") seed = number<uint64_t>(flag, value), seeded = true;
    else fail("unknown option " + flag + ": use --prompt, --tokens, --temperature, --top-k or --seed");
  }
  if (prompt.empty()) fail("--prompt is empty: give at least one character to start from");
  if (tokens < 0) fail("--tokens must not be negative");
  if (!std::isfinite(temperature) || temperature < 0) fail("--temperature must be a finite number >= 0 (0 = greedy)");
  if (top_k_given && top_k < 1) fail("--top-k must be at least 1");

  // The model file must be the one model.json describes.
  const std::filesystem::path manifest_path = model_path.parent_path() / "model.json";
  if (!std::filesystem::is_regular_file(manifest_path)) {
    fail(manifest_path.string() + " is missing: it holds the SHA-256 of the model files; export again with make export");
  }
  const std::string expected = recorded_sha256(read_file(manifest_path), model_path.filename().string());
  if (expected.empty()) {
    fail(manifest_path.string() + " lists no SHA-256 for " + model_path.filename().string() + ": export again with make export");
  }
  if (sha256_hex(read_file(model_path)) != expected) {
    fail(model_path.string() + " does not match its SHA-256 in " + manifest_path.string() +
         " (damaged, or from another export): export again with make export");
  }

  torch::jit::ExtraFilesMap extra{{"vocab.txt", ""}, {"block_size.txt", ""}};
  torch::jit::script::Module model;
  try {
    model = torch::jit::load(model_path.string(), torch::kCPU, extra);
  } catch (const c10::Error&) {
    fail("cannot load " + model_path.string() + " as TorchScript: export it again with make export");
  }
  model.eval();
  const std::vector<std::string> vocab = characters(extra["vocab.txt"]);
  if (vocab.empty() || extra["block_size.txt"].empty()) {
    fail(model_path.string() + " lacks vocab.txt or block_size.txt inside: export it with make export");
  }
  // Longer contexts than the model was trained for are cropped to the last block_size ids.
  const size_t block_size = parsed_block_size(extra["block_size.txt"], model_path.string());
  std::unordered_map<std::string, int64_t> index;
  for (size_t i = 0; i < vocab.size(); ++i) index[vocab[i]] = static_cast<int64_t>(i);

  const size_t bad = invalid_utf8_at(prompt);
  if (bad != std::string::npos) {
    char shown[8];
    std::snprintf(shown, sizeof shown, "0x%02X", static_cast<unsigned char>(prompt[bad]));
    fail("the prompt is not UTF-8 text (byte " + std::string(shown) + " at position " + std::to_string(bad) +
         "): pass it as UTF-8");
  }
  std::vector<int64_t> ids;
  for (const std::string& c : characters(prompt)) {
    auto found = index.find(c);
    if (found == index.end()) fail("prompt character '" + c + "' is not in the vocabulary: use characters of the corpus");
    ids.push_back(found->second);
  }

  // Sampling as in model/sample.py. Seeding the default generator gives the draws of Python's
  // Generator().manual_seed.
  if (seeded) torch::manual_seed(seed);
  torch::NoGradGuard no_grad;
  std::signal(SIGINT, on_interrupt);
  std::cout << prompt << std::flush;
  for (long step = 0; step < tokens && !interrupted; ++step) {
    const size_t start = ids.size() > block_size ? ids.size() - block_size : 0;
    std::vector<int64_t> context(ids.begin() + start, ids.end());
    auto input = torch::from_blob(context.data(), {1, static_cast<int64_t>(context.size())}, torch::kLong);
    auto logits = model.forward({input}).toTensor().index({0, -1}).to(torch::kFloat);
    ids.push_back(pick_token(logits, temperature, top_k_given, top_k));
    std::cout << vocab[ids.back()] << std::flush;  // as it comes: a long generation shows progress
  }
  std::cout << std::endl;
  if (interrupted) return 130;  // 128 + SIGINT, as a shell reports a program Ctrl-C ended
  return 0;
}
