// SPDX-License-Identifier: Apache-2.0
// RuntimeOptions::stats_file: a thread that writes the runtime's stats JSON
// to a file every interval (replaced crash-safely, so a reader never sees
// half of one), and a last time when it stops.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "faultline/log.h"

namespace faultline::detail {

class StatsWriter {
 public:
  // `json` returns what to write. The first write happens here and throws
  // Error if the file cannot be written; later ones run on the writer's
  // thread, and one that fails is reported through `log`, once until one
  // succeeds again.
  StatsWriter(std::string path, std::chrono::milliseconds interval, std::function<std::string()> json, LogSink log);
  ~StatsWriter();  // writes once more, then stops
  StatsWriter(const StatsWriter&) = delete;
  StatsWriter& operator=(const StatsWriter&) = delete;

 private:
  void run();
  void write_once();  // write(), errors logged
  void write(const std::string& json) const;

  const std::string path_;
  const std::chrono::milliseconds interval_;
  const std::function<std::string()> json_;
  const LogSink log_;
  bool failing_ = false;  // writer thread only
  std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace faultline::detail
