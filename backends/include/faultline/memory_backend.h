// SPDX-License-Identifier: Apache-2.0
// MemoryBackend serves a region from a buffer in memory. Reads complete
// inside submit() and point at the buffer (ReadCompletion::data), so pages
// are copied once, by UFFDIO_COPY: with it the runtime's own cost can be
// measured, and tests can check every byte against the source.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "faultline/backend.h"

namespace faultline {

class MemoryBackend final : public Backend {
 public:
  // Owns a copy of the bytes.
  explicit MemoryBackend(std::vector<std::byte> bytes);
  // Borrows: the caller keeps `bytes` alive and unchanged while any region
  // maps this backend.
  static std::shared_ptr<MemoryBackend> borrow(std::span<const std::byte> bytes);

  uint64_t size() const override { return view_.size(); }
  std::string name() const override;
  uint32_t queue_depth() const override { return 64; }
  int completion_fd() const override { return -1; }
  void submit(std::span<const ReadRequest> reads) override;
  size_t reap(std::span<ReadCompletion> out) override;

 private:
  MemoryBackend() = default;
  std::vector<std::byte> owned_;
  std::span<const std::byte> view_;
  std::vector<ReadCompletion> done_;
};

}  // namespace faultline
