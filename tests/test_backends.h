// SPDX-License-Identifier: Apache-2.0
// Backends for tests: real asynchronous implementations of the Backend
// contract over a buffer, with faults injected on purpose.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "faultline/backend.h"

namespace faultline::test {

// Serves `data` from a worker thread, completing through an eventfd.
// - fail_at(offset, len, err): reads overlapping the range complete with -err
// - transient_failures(n): the first n reads complete with -EAGAIN
// - hold(): completions wait until release() (reads "in flight" for as long
//   as the test wants)
// - short_reads: each read returns at most half of what was asked
// Urgent reads (and reads make_urgent() raised) are served before the
// background ones still queued; served() lists read offsets in the order
// the worker took them.
class ScriptedBackend final : public Backend {
 public:
  explicit ScriptedBackend(std::vector<std::byte> data, uint32_t depth = 16)
      : data_(std::move(data)), depth_(depth), efd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    worker_ = std::thread([this] { work(); });
  }
  ~ScriptedBackend() override {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
      held_ = false;
    }
    cv_.notify_all();
    worker_.join();
    close(efd_);
  }

  void fail_at(uint64_t offset, uint64_t len, int err) {
    std::lock_guard<std::mutex> l(mu_);
    fails_.push_back({offset, len, err});
  }
  void transient_failures(int n) { transient_ = n; }
  void set_short_reads(bool on) { short_reads_ = on; }
  void hold() {
    std::lock_guard<std::mutex> l(mu_);
    held_ = true;
  }
  void release() {
    {
      std::lock_guard<std::mutex> l(mu_);
      held_ = false;
    }
    cv_.notify_all();
  }
  // Reads submitted so far (the runtime's one-read-per-chunk promise).
  size_t reads() const { return reads_.load(); }
  size_t pending() {
    std::lock_guard<std::mutex> l(mu_);
    return queue_.size() + urgent_.size();
  }
  std::vector<uint64_t> served() {
    std::lock_guard<std::mutex> l(mu_);
    return served_;
  }
  size_t raised() const { return raised_.load(); }

  uint64_t size() const override { return data_.size(); }
  std::string name() const override { return "scripted test backend"; }
  uint32_t queue_depth() const override { return depth_; }
  int completion_fd() const override { return efd_; }
  void submit(std::span<const ReadRequest> reads) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      for (const ReadRequest& r : reads) (r.urgent ? urgent_ : queue_).push_back(r);
      reads_ += reads.size();
    }
    cv_.notify_all();
  }
  void make_urgent(uint64_t tag) override {
    std::lock_guard<std::mutex> l(mu_);
    auto it = std::find_if(queue_.begin(), queue_.end(), [&](const ReadRequest& r) { return r.tag == tag; });
    if (it == queue_.end()) return;
    urgent_.push_back(*it);
    queue_.erase(it);
    ++raised_;
  }
  size_t reap(std::span<ReadCompletion> out) override {
    std::lock_guard<std::mutex> l(mu_);
    size_t n = std::min(out.size(), done_.size());
    for (size_t i = 0; i < n; ++i) {
      out[i] = done_.front();
      done_.pop_front();
    }
    return n;
  }

 private:
  struct Fail {
    uint64_t offset, len;
    int err;
  };

  void work() {
    std::unique_lock<std::mutex> l(mu_);
    for (;;) {
      cv_.wait(l, [&] { return stop_ || (!held_ && (!queue_.empty() || !urgent_.empty())); });
      if (stop_) return;
      auto& q = urgent_.empty() ? queue_ : urgent_;
      ReadRequest r = q.front();
      q.pop_front();
      served_.push_back(r.offset);
      ReadCompletion c{r.tag, 0, false};
      bool failed = false;
      for (const Fail& f : fails_)
        if (r.offset < f.offset + f.len && f.offset < r.offset + r.length) {
          c.result = -f.err;
          failed = true;
        }
      if (!failed && transient_ > 0) {
        --transient_;
        c.result = -EAGAIN;
        failed = true;
      }
      if (!failed) {
        uint64_t n = r.offset < data_.size() ? std::min<uint64_t>(r.length, data_.size() - r.offset) : 0;
        if (short_reads_ && n > 4096) n = n / 2;
        std::memcpy(r.dest, data_.data() + r.offset, n);
        c.result = static_cast<int64_t>(n);
      }
      done_.push_back(c);
      uint64_t one = 1;
      (void)!write(efd_, &one, sizeof one);
    }
  }

  std::vector<std::byte> data_;
  uint32_t depth_;
  int efd_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<ReadRequest> queue_, urgent_;
  std::deque<ReadCompletion> done_;
  std::vector<uint64_t> served_;
  std::atomic<size_t> raised_{0};
  std::vector<Fail> fails_;
  std::atomic<int> transient_{0};
  std::atomic<bool> short_reads_{false};
  std::atomic<size_t> reads_{0};
  bool held_ = false;
  bool stop_ = false;
  std::thread worker_;
};

}  // namespace faultline::test
