// SPDX-License-Identifier: Apache-2.0
#include "stats_writer.h"

#include "atomic_file.h"
#include "faultline/error.h"
#include "log.h"

namespace faultline::detail {

StatsWriter::StatsWriter(std::string path, std::chrono::milliseconds interval, std::function<std::string()> json,
                         LogSink log)
    : path_(std::move(path)), interval_(interval), json_(std::move(json)), log_(std::move(log)) {
  write(json_());  // here, so a file that cannot be written is an error at once
  thread_ = std::thread([this] { run(); });
}

void StatsWriter::write(const std::string& json) const {
  std::string text = json + "\n";
  AtomicFile file(path_, "stats file");
  file.append(text.data(), text.size());
  file.commit();
}

StatsWriter::~StatsWriter() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void StatsWriter::run() {
  std::unique_lock lock(mu_);
  for (;;) {
    bool stopping = wake_.wait_for(lock, interval_, [this] { return stop_; });
    lock.unlock();
    write_once();  // the last one after stop: the final numbers
    if (stopping) return;
    lock.lock();
  }
}

void StatsWriter::write_once() {
  try {
    write(json_());
    if (failing_) logf(log_, LogLevel::kWarning, "stats file %s: written again", path_.c_str());
    failing_ = false;
  } catch (const Error& e) {
    if (!failing_) logf(log_, LogLevel::kError, "%s (retried every interval)", e.what());
    failing_ = true;
  }
}

}  // namespace faultline::detail
