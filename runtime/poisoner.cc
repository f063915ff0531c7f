// SPDX-License-Identifier: Apache-2.0
#include "poisoner.h"

#include <errno.h>
#include <pthread.h>
#include <sys/mman.h>

#include "faultline/error.h"
#include "uffd.h"

namespace faultline::detail {

Poisoner::Poisoner(std::function<void(const PoisonJob&)> done, std::function<void(const PoisonJob&, int)> log)
    : done_(std::move(done)), log_(std::move(log)), empty_file_(memfd_create("faultline-poison", MFD_CLOEXEC)) {
  if (!empty_file_) throw_errno("cannot create the empty file used for poisoning", errno);
  thread_ = std::thread([this] { run(); });
}

Poisoner::~Poisoner() {
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  thread_.join();
}

void Poisoner::submit(const PoisonJob& job) {
  {
    MutexLock lock(mu_);
    queue_.push_back(job);
  }
  cv_.notify_one();
}

void Poisoner::run() {
  pthread_setname_np(pthread_self(), "faultline-poisn");  // 15 characters: the kernel limit
  std::vector<PoisonJob> work;
  for (;;) {
    {
      MutexLock lock(mu_);
      while (!stop_ && queue_.empty()) cv_.wait(mu_);
      if (queue_.empty()) return;  // stop_, nothing left
      work.swap(queue_);
    }
    for (const PoisonJob& job : work) {
      void* at = reinterpret_cast<void*>(job.addr);
      if (mmap(at, job.length, job.prot, MAP_SHARED | MAP_FIXED, empty_file_.get(), 0) == MAP_FAILED)
        log_(job, errno);
      uffd_wake(job.uffd, job.addr, job.length);
      done_(job);
    }
    work.clear();
  }
}

}  // namespace faultline::detail
