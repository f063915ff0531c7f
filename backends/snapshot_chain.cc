// SPDX-License-Identifier: Apache-2.0
// Chains of incremental snapshots (format version 2): opening a layer and its
// ancestors, checking every link, and merging their indexes into one, so a
// read of any chunk costs one lookup whatever the depth.
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <unordered_set>

#include "faultline/error.h"
#include "snapshot_format.h"

namespace faultline::detail {

std::string resolve_parent_path(const std::string& child_path, const std::string& parent_path) {
  if (!parent_path.empty() && parent_path[0] == '/') return parent_path;
  std::filesystem::path dir = std::filesystem::path(child_path).parent_path();
  return dir.empty() ? parent_path : (dir / parent_path).string();
}

namespace {

ChainLayer open_layer_file(const std::string& path, const std::string& role) {
  ChainLayer layer;
  layer.path = path;
  uint64_t bytes = 0;
  UniqueFd fd = open_regular_file(path, role, &bytes);
  layer.index = read_snapshot_index(fd.get(), path, bytes);
  layer.fd = std::make_shared<const UniqueFd>(std::move(fd));
  return layer;
}

}  // namespace

SnapshotChain open_snapshot_chain(const std::string& path) {
  SnapshotChain chain;
  chain.layers.push_back(open_layer_file(path, "snapshot "));
  std::unordered_set<std::string> seen{to_hex(chain.layers[0].index.id)};
  while (chain.layers.back().index.has_parent) {
    const ChainLayer& child = chain.layers.back();
    const std::string parent = resolve_parent_path(child.path, child.index.parent_path);
    const std::string link = "snapshot " + child.path + ": its parent " + parent;
    if (chain.layers.size() >= kMaxChainDepth)
      throw Error(link + ": the chain is deeper than " + std::to_string(kMaxChainDepth) + " layers");
    ChainLayer layer;
    try {
      layer = open_layer_file(parent, "");
    } catch (const Error& e) {
      throw Error(link + " is missing or unreadable: " + e.what(), e.sys_errno());
    }
    if (layer.index.id != child.index.parent_id)
      throw Error(link + " is the wrong file: its content id is " + to_hex(layer.index.id) + ", the child names " +
                      to_hex(child.index.parent_id) + " (the parent was replaced or rewritten)",
                  EINVAL);
    if (!seen.insert(to_hex(layer.index.id)).second) throw Error(link + ": the chain loops back on itself", EINVAL);
    const SnapshotInfo &a = child.index.info, &b = layer.index.info;
    if (a.size != b.size || a.chunk_size != b.chunk_size)
      throw Error(link + " does not fit: it is " + std::to_string(b.size) + " bytes in chunks of " +
                      std::to_string(b.chunk_size) + ", the child " + std::to_string(a.size) + " in chunks of " +
                      std::to_string(a.chunk_size),
                  EINVAL);
    chain.layers.push_back(std::move(layer));
  }

  // Newest first: the first layer that stores (or zero-flags) a chunk wins.
  const SnapshotIndex& top = chain.layers[0].index;
  const uint64_t chunks = top.info.chunk_count;
  chain.merged.info = top.info;
  chain.merged.id = top.id;
  chain.merged.has_parent = top.has_parent;
  chain.merged.parent_path = top.parent_path;
  chain.merged.parent_id = top.parent_id;
  chain.merged.dictionary = top.dictionary;
  chain.merged.entries.assign(chunks, ChunkEntry{});
  chain.layer_of.assign(chunks, 0);
  std::vector<bool> found(chunks, false);
  for (uint32_t l = 0; l < chain.layers.size(); ++l) {
    const auto& entries = chain.layers[l].index.entries;
    for (uint64_t c = 0; c < chunks; ++c) {
      if (found[c] || entries[c].inherited()) continue;
      found[c] = true;
      chain.merged.entries[c] = entries[c];
      chain.layer_of[c] = l;
    }
  }
  // The oldest layer has no parent, so it holds every chunk (the reader
  // refuses inherited entries without one): nothing is left unfound.
  SnapshotInfo& info = chain.merged.info;
  info.layers = static_cast<uint32_t>(chain.layers.size());
  info.zero_chunks = info.compressed_bytes = info.file_bytes = info.inherited_chunks = 0;
  for (uint64_t c = 0; c < chunks; ++c) {
    if (chain.merged.entries[c].zero()) info.zero_chunks++;
    info.compressed_bytes += chain.merged.entries[c].length;
  }
  for (const ChainLayer& l : chain.layers) info.file_bytes += l.index.info.file_bytes;
  return chain;
}

}  // namespace faultline::detail
