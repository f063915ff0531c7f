// SPDX-License-Identifier: Apache-2.0
// Which thread may touch what, checked rather than described.
//
//  - Clang's thread-safety analysis (-Wthread-safety, on in clang builds):
//    Mutex and MutexLock are std::mutex and std::lock_guard with the
//    capability annotations libstdc++'s types lack, so GUARDED_BY members
//    read without their lock are compile errors.
//  - LoopThread: the fault loop's state belongs to its one thread. Methods
//    that touch it start with FAULTLINE_ASSERT_LOOP(loop), which in debug
//    and sanitizer builds (FAULTLINE_CHECK_THREADS) aborts with the
//    function's name when called from any other thread, as LevelDB's
//    AssertHeld does for its mutex. Release builds compile it away.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

#if defined(__clang__)
#define FAULTLINE_TSA(x) __attribute__((x))
#else
#define FAULTLINE_TSA(x)
#endif
#define CAPABILITY(x) FAULTLINE_TSA(capability(x))
#define SCOPED_CAPABILITY FAULTLINE_TSA(scoped_lockable)
#define GUARDED_BY(x) FAULTLINE_TSA(guarded_by(x))
#define REQUIRES(...) FAULTLINE_TSA(requires_capability(__VA_ARGS__))
#define EXCLUDES(...) FAULTLINE_TSA(locks_excluded(__VA_ARGS__))
#define ACQUIRE(...) FAULTLINE_TSA(acquire_capability(__VA_ARGS__))
#define RELEASE(...) FAULTLINE_TSA(release_capability(__VA_ARGS__))
#define NO_THREAD_SAFETY_ANALYSIS FAULTLINE_TSA(no_thread_safety_analysis)

namespace faultline::detail {

class CAPABILITY("mutex") Mutex {
 public:
  void lock() ACQUIRE() { mu_.lock(); }
  void unlock() RELEASE() { mu_.unlock(); }

 private:
  std::mutex mu_;
};

class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~MutexLock() RELEASE() { mu_.unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex& mu_;
};

// Waits on a Mutex (std::condition_variable_any over its lock()/unlock()).
using CondVar = std::condition_variable_any;

class LoopThread {
 public:
  // Called first thing on the loop thread.
  void bind() { id_.store(std::this_thread::get_id(), std::memory_order_relaxed); }
  void check(const char* function) const {
    if (id_.load(std::memory_order_relaxed) != std::this_thread::get_id()) {
      std::fprintf(stderr, "faultline: internal error: %s runs only on the fault-loop thread\n", function);
      std::abort();
    }
  }

 private:
  std::atomic<std::thread::id> id_{};
};

}  // namespace faultline::detail

#if FAULTLINE_CHECK_THREADS
#define FAULTLINE_ASSERT_LOOP(loop) (loop).check(__func__)
#else
#define FAULTLINE_ASSERT_LOOP(loop) ((void)0)
#endif
