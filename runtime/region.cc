#include "faultline/region.h"

#include "engine.h"
#include "faultline/error.h"

namespace faultline {

Region::Region(std::shared_ptr<detail::Engine> engine, std::shared_ptr<detail::RegionState> state)
    : engine_(std::move(engine)), state_(std::move(state)) {}

Region::Region(Region&& other) noexcept = default;

Region& Region::operator=(Region&& other) noexcept {
  if (this != &other) {
    reset();
    engine_ = std::move(other.engine_);
    state_ = std::move(other.state_);
  }
  return *this;
}

Region::~Region() { reset(); }

void Region::reset() {
  if (!state_) return;
  // First the loop forgets the region and its reads finish; then the
  // unregister wakes any thread still waiting on it; then the unmap.
  engine_->remove_region(state_.get());
  detail::uffd_unregister(engine_->uffd(), state_->memory.data(), state_->memory.size());
  state_.reset();
  engine_.reset();
}

std::byte* Region::data() const { return state_ ? state_->memory.data() : nullptr; }

size_t Region::size() const { return state_ ? state_->length : 0; }

const RegionOptions& Region::options() const {
  static const RegionOptions kNone{};
  return state_ ? state_->options : kNone;
}

void Region::prefetch(uint64_t offset, uint64_t length) {
  if (!state_) throw Error("Region::prefetch on an empty region");
  if (offset >= state_->length)
    throw Error("Region::prefetch: offset " + std::to_string(offset) + " is past the end of the region (" +
                std::to_string(state_->length) + " bytes)");
  engine_->prefetch(state_.get(), offset, length);
}

StatsSnapshot Region::stats() const { return state_ ? state_->stats.snapshot() : StatsSnapshot{}; }

}  // namespace faultline
