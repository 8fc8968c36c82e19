// Schema comparison. `this` is the cache's schema, `other` the schema of the
// output being stored, so every message reads "... in the output but ... in
// the cache".

#include "torchcachex/schema.h"

#include <string>

namespace torchcachex {

namespace {

std::string LeafLabel(const LeafSpec& leaf) {
  return leaf.name.empty() ? std::string("the unnamed leaf") : "leaf '" + leaf.name + "'";
}

std::string KindName(LeafKind kind) { return kind == LeafKind::kTensor ? "a tensor" : "a blob"; }

// "visual, semantic"; the unnamed leaf is shown as "<unnamed>".
std::string LeafNames(const std::vector<LeafSpec>& leaves) {
  std::string out;
  for (size_t i = 0; i < leaves.size(); ++i) {
    if (i > 0) out += ", ";
    out += leaves[i].name.empty() ? std::string("<unnamed>") : leaves[i].name;
  }
  return out;
}

std::string CountLeaves(size_t n) { return std::to_string(n) + (n == 1 ? " leaf" : " leaves"); }

// "a dict", "an ..." for the output_structure names.
std::string WithArticle(const std::string& word) {
  bool vowel = !word.empty() && std::string("aeiou").find(word[0]) != std::string::npos;
  return (vowel ? "an " : "a ") + word;
}

}  // namespace

std::string Schema::DescribeDifference(const Schema& other) const {
  // output_structure is compared only when both sides know it.
  if (!output_structure.empty() && !other.output_structure.empty() &&
      output_structure != other.output_structure) {
    return "the output is " + WithArticle(other.output_structure) + " but the cache stores " +
           WithArticle(output_structure);
  }
  if (leaves.size() != other.leaves.size()) {
    return "the output has " + CountLeaves(other.leaves.size()) + " but the cache stores " +
           std::to_string(leaves.size()) + " (" + LeafNames(leaves) + ")";
  }
  for (size_t i = 0; i < leaves.size(); ++i) {
    const LeafSpec& mine = leaves[i];
    const LeafSpec& theirs = other.leaves[i];
    if (mine.name != theirs.name) {
      return "leaf " + std::to_string(i) + " is named '" + theirs.name + "' in the output but '" +
             mine.name + "' in the cache";
    }
    if (mine.kind != theirs.kind) {
      return LeafLabel(mine) + " is " + KindName(theirs.kind) + " in the output but " +
             KindName(mine.kind) + " in the cache";
    }
    if (mine.kind == LeafKind::kTensor && mine.dtype != theirs.dtype) {
      return LeafLabel(mine) + " is " + std::string(TorchName(theirs.dtype)) +
             " in the output but " + std::string(TorchName(mine.dtype)) + " in the cache";
    }
  }
  return "";
}

}  // namespace torchcachex
