// SPDX-License-Identifier: Apache-2.0
// A deterministic VM-like memory image, for the snapshot_restore sample and
// faultline-bench's restore workload.
//
// Guest memory is not uniform: large runs of free memory are zero, page cache
// and heaps compress a few times over, and some memory (compressed files,
// keys, media) does not compress at all. The image mimics that:
//
//   - the image is cut into 1 MiB areas; ~30% of them are all zero (free
//     memory comes in long runs);
//   - the other areas are cut into 64 KiB extents, each "text" (~57%: 8-byte
//     words drawn mostly from a 64-word vocabulary, with small integers and
//     an occasional zero page, ~3x compressible) or "random" (incompressible);
//   - a hot working set of about 10% of the 64 KiB extents, in clusters of 1
//     to 8 neighbours scattered over the image, touched in a fixed order
//     (clusters shuffled, each cluster front to back): what a restored guest
//     touches first.
//
// Every word is a pure function of (seed, byte offset), so any page can be
// regenerated to check what a restore returned, without keeping the image.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace vm_image {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kExtent = 64 * 1024;  // kind and working-set granularity
constexpr uint64_t kArea = 1024 * 1024;  // zero-run granularity
constexpr uint64_t kWordsPerPage = kPage / 8;

enum class Kind { kZero, kText, kRandom };

inline uint64_t mix64(uint64_t x) {  // splitmix64 finaliser
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// What the 64 KiB extent holding byte `offset` contains.
inline Kind kind_at(uint64_t offset, uint64_t seed = 1) {
  const uint64_t area = offset / kArea;
  if (mix64(area ^ (seed * 0x51ED27)) % 100 < 30) return Kind::kZero;
  const uint64_t extent = offset / kExtent;
  return mix64(extent ^ (seed * 0xE47E27)) % 100 < 57 ? Kind::kText : Kind::kRandom;
}

namespace detail {
inline bool text_page_is_zero(uint64_t page, uint64_t seed) { return mix64(page ^ (seed * 0x2E50)) % 8 == 0; }
inline uint64_t random_word(uint64_t word, uint64_t seed) { return mix64(word ^ (seed << 48) ^ 0x52414E44ull); }
inline uint64_t text_word(uint64_t word, uint64_t seed) {
  const uint64_t h = mix64(word ^ (seed << 40) ^ 0x54455854ull);
  if ((h & 3) != 0) return mix64((h >> 2) % 64 + seed * 977) & 0x00007FFFFFFFFFF8ull;  // a "pointer" from a small set
  return (h >> 8) & 0xFFF;  // a small integer
}
}  // namespace detail

// The 8-byte word at word index `word` (byte offset word * 8), as stored in
// memory on the little-endian machines faultline runs on.
inline uint64_t word_at(uint64_t word, uint64_t seed = 1) {
  const uint64_t offset = word * 8;
  switch (kind_at(offset, seed)) {
    case Kind::kZero:
      return 0;
    case Kind::kRandom:
      return detail::random_word(word, seed);
    case Kind::kText:
      return detail::text_page_is_zero(offset / kPage, seed) ? 0 : detail::text_word(word, seed);
  }
  return 0;
}

// Writes the page starting at byte `page_offset` (a multiple of kPage) into
// out[0..kPage).
inline void fill_page(uint64_t page_offset, std::byte* out, uint64_t seed = 1) {
  const uint64_t first = page_offset / 8;
  const Kind kind = kind_at(page_offset, seed);
  if (kind == Kind::kZero || (kind == Kind::kText && detail::text_page_is_zero(page_offset / kPage, seed))) {
    std::memset(out, 0, kPage);
    return;
  }
  for (uint64_t i = 0; i < kWordsPerPage; ++i) {
    const uint64_t w = kind == Kind::kText ? detail::text_word(first + i, seed) : detail::random_word(first + i, seed);
    std::memcpy(out + i * 8, &w, 8);
  }
}

// Fills out[0..length) with the image bytes at [offset, offset + length).
// offset and length are multiples of kPage.
inline void fill(uint64_t offset, std::byte* out, uint64_t length, uint64_t seed = 1) {
  for (uint64_t p = 0; p < length; p += kPage) fill_page(offset + p, out + p, seed);
}

// Whether [data, data + kPage) is exactly the image's page at page_offset.
inline bool page_matches(uint64_t page_offset, const std::byte* data, uint64_t seed = 1) {
  alignas(64) std::byte expect[kPage];
  fill_page(page_offset, expect, seed);
  return std::memcmp(expect, data, kPage) == 0;
}

// The hot working set of an image of `size` bytes: byte offsets of 64 KiB
// extents, in the order the guest touches them. About `fraction` of the
// extents, in clusters of 1..8 neighbours at random places; clusters in
// random order, each cluster front to back. Extents past the last whole one
// are never hot.
inline std::vector<uint64_t> hot_extents(uint64_t size, double fraction = 0.10, uint64_t seed = 1) {
  const uint64_t extents = size / kExtent;
  const uint64_t want = std::min<uint64_t>(extents, static_cast<uint64_t>(fraction * static_cast<double>(extents) + 0.5));
  std::vector<bool> taken(extents, false);
  std::vector<std::pair<uint64_t, uint64_t>> clusters;  // first extent, length
  uint64_t got = 0;
  uint64_t state = seed * 0x4057ull;
  auto next = [&] { return mix64(state++); };
  for (uint64_t attempt = 0; got < want && attempt < 64 * extents + 64; ++attempt) {
    uint64_t len = 1 + next() % 8;
    len = std::min(len, want - got);
    const uint64_t first = next() % extents;
    if (first + len > extents) continue;
    bool free = true;
    for (uint64_t e = first; e < first + len && free; ++e) free = !taken[e];
    if (!free) continue;
    for (uint64_t e = first; e < first + len; ++e) taken[e] = true;
    clusters.push_back({first, len});
    got += len;
  }
  for (size_t i = clusters.size(); i > 1; --i) std::swap(clusters[i - 1], clusters[next() % i]);
  std::vector<uint64_t> out;
  out.reserve(got);
  for (const auto& [first, len] : clusters)
    for (uint64_t e = first; e < first + len; ++e) out.push_back(e * kExtent);
  return out;
}

}  // namespace vm_image
