// Greedy text generation from model.ts with libtorch: no Python at run time.
//
//   generate MODEL.ts [PROMPT] [TOKENS]
//
// The vocabulary (one UTF-8 string, index = id) and the block size travel inside model.ts as the
// extra files "vocab.txt" and "block_size.txt", so this program needs nothing but the model file.
// Built by `make cpp-generate` (python -m export.cpp) against the libtorch inside the torch wheel.
#include <torch/script.h>

#include <cstdlib>
#include <iostream>
#include <string>
#include <unordered_map>
#include <vector>

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

int main(int argc, char** argv) {
  if (argc < 2 || argc > 4) {
    std::cerr << "usage: " << argv[0] << " MODEL.ts [PROMPT] [TOKENS]\n";
    return 2;
  }
  const std::string prompt = argc > 2 ? argv[2] : "ROMEO:";
  const int tokens = argc > 3 ? std::atoi(argv[3]) : 200;

  torch::jit::ExtraFilesMap extra{{"vocab.txt", ""}, {"block_size.txt", ""}};
  torch::jit::script::Module model;
  try {
    model = torch::jit::load(argv[1], torch::kCPU, extra);
  } catch (const c10::Error&) {
    std::cerr << "error: cannot load " << argv[1] << " as TorchScript: export it again with make export\n";
    return 2;
  }
  model.eval();
  const std::vector<std::string> vocab = characters(extra["vocab.txt"]);
  if (vocab.empty() || extra["block_size.txt"].empty()) {
    std::cerr << "error: " << argv[1] << " lacks vocab.txt or block_size.txt inside: export it with make export\n";
    return 2;
  }
  // Longer contexts than the model was trained for are cropped to the last block_size ids.
  const size_t block_size = std::stoul(extra["block_size.txt"]);
  std::unordered_map<std::string, int64_t> index;
  for (size_t i = 0; i < vocab.size(); ++i) index[vocab[i]] = static_cast<int64_t>(i);

  std::vector<int64_t> ids;
  for (const std::string& c : characters(prompt)) {
    auto found = index.find(c);
    if (found == index.end()) {
      std::cerr << "error: prompt character '" << c << "' is not in the vocabulary: use characters of the corpus\n";
      return 2;
    }
    ids.push_back(found->second);
  }

  torch::NoGradGuard no_grad;
  for (int step = 0; step < tokens; ++step) {
    const size_t start = ids.size() > block_size ? ids.size() - block_size : 0;
    std::vector<int64_t> context(ids.begin() + start, ids.end());
    auto input = torch::from_blob(context.data(), {1, static_cast<int64_t>(context.size())}, torch::kLong);
    auto logits = model.forward({input}).toTensor();
    ids.push_back(logits.index({0, -1}).argmax().item<int64_t>());
  }
  std::string text;
  for (int64_t id : ids) text += vocab[id];
  std::cout << text << std::endl;
  return 0;
}
