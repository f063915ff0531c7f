// SPDX-License-Identifier: Apache-2.0
// preload-probe MODE FILE [ARGS]: maps FILE the way a program would and
// checks every byte it can see against pread(2) of the file, for the cases
// sqlite3 and numpy do not exercise. It knows nothing of faultline: the
// test runs it with and without LD_PRELOAD=libfaultline-preload.so.
//
//   read FILE                 map all of it
//   offset FILE OFF LEN       map LEN bytes at OFF: the whole pages read as
//                             the file; pages past its last page raise SIGBUS
//   partial FILE              munmap the middle third, check the rest
//   mremap FILE               shrink, then grow (may move), check
//   madvise FILE              MADV_WILLNEED, read, MADV_DONTNEED, read again
//   fork FILE                 the child reads all of the mapping
//   emfile FILE               no descriptor left when mapping
//   threads FILE              4 threads map, check and unmap it (whole, or in
//                             two halves) 20 times each, all starting at once
//                             (the first mapping creates the runtime)
//
// Prints one "ok ..." line and exits 0, or a message and exits 1.
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr size_t kPage = 4096;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "preload-probe: %s\n", what.c_str());
  std::exit(1);
}

std::vector<unsigned char> file_bytes(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) die("fstat");
  std::vector<unsigned char> b(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < b.size()) {
    ssize_t n = pread(fd, b.data() + done, b.size() - done, static_cast<off_t>(done));
    if (n <= 0) die("pread");
    done += static_cast<size_t>(n);
  }
  return b;
}

// Mapping bytes [from, to) must equal the file's bytes at off + from.
void check(const unsigned char* p, const std::vector<unsigned char>& file, size_t off, size_t from, size_t to,
           const char* what) {
  for (size_t i = from; i < to; ++i) {
    unsigned char want = off + i < file.size() ? file[off + i] : 0;
    if (p[i] != want)
      die(std::string(what) + ": byte " + std::to_string(i) + " of the mapping is " + std::to_string(p[i]) +
          ", the file has " + std::to_string(want));
  }
}

unsigned char* map(int fd, size_t len, off_t off) {
  void* p = mmap(nullptr, len, PROT_READ, MAP_PRIVATE, fd, off);
  if (p == MAP_FAILED) die(std::string("mmap: ") + std::strerror(errno));
  return static_cast<unsigned char*>(p);
}

bool mapped(const void* p, size_t len) {  // msync fails with ENOMEM on unmapped memory
  return msync(const_cast<void*>(p), len, MS_ASYNC) == 0;
}

sigjmp_buf jump;
void on_sigbus(int) { siglongjmp(jump, 1); }

bool raises_sigbus(const volatile unsigned char* p) {
  struct sigaction sa = {};
  sa.sa_handler = on_sigbus;
  sigaction(SIGBUS, &sa, nullptr);
  if (sigsetjmp(jump, 1) == 0) {
    (void)*p;
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) die("usage: preload-probe MODE FILE [ARGS]");
  std::string mode = argv[1];
  int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
  if (fd < 0) die(std::string("open ") + argv[2] + ": " + std::strerror(errno));
  std::vector<unsigned char> file = file_bytes(fd);
  size_t size = file.size();

  if (mode == "read") {
    unsigned char* p = map(fd, size, 0);
    check(p, file, 0, 0, size, "read");
    std::printf("ok read %zu bytes\n", size);
  } else if (mode == "offset") {
    if (argc != 5) die("usage: preload-probe offset FILE OFF LEN");
    size_t off = std::strtoull(argv[3], nullptr, 0), len = std::strtoull(argv[4], nullptr, 0);
    unsigned char* p = map(fd, len, static_cast<off_t>(off));
    // Whole pages: the file's, the last one padded with zeros, then SIGBUS.
    size_t data_pages = (size - off + kPage - 1) / kPage * kPage;
    size_t len_pages = (len + kPage - 1) / kPage * kPage;
    size_t readable = std::min(len_pages, data_pages);
    check(p, file, off, 0, readable, "offset");
    size_t sigbus = 0;
    for (size_t at = readable; at < len_pages; at += kPage) {
      if (!raises_sigbus(p + at)) die("no SIGBUS at byte " + std::to_string(at) + ", past the file's last page");
      ++sigbus;
    }
    std::printf("ok offset %zu: %zu bytes read, %zu pages raise SIGBUS\n", off, readable, sigbus);
  } else if (mode == "partial") {
    unsigned char* p = map(fd, size, 0);
    size_t third = size / 3 / kPage * kPage;
    check(p, file, 0, 0, kPage, "before munmap");
    if (munmap(p + third, third) != 0) die(std::string("munmap: ") + std::strerror(errno));
    if (mapped(p + third, third)) die("the middle third is still mapped after munmap");
    check(p, file, 0, 0, third, "first third");
    check(p, file, 0, 2 * third, size, "last third");
    if (munmap(p, third) != 0 || munmap(p + 2 * third, size - 2 * third) != 0) die("munmap of the rest");
    if (mapped(p, third) || mapped(p + 2 * third, kPage)) die("still mapped after munmap of the rest");
    std::printf("ok partial: kept %zu bytes, unmapped %zu\n", size - third, third);
  } else if (mode == "mremap") {
    unsigned char* p = map(fd, size, 0);
    check(p, file, 0, 0, kPage, "before mremap");
    size_t half = size / 2 / kPage * kPage;
    void* q = mremap(p, size, half, 0);
    if (q == MAP_FAILED) die(std::string("mremap (shrink): ") + std::strerror(errno));
    check(static_cast<unsigned char*>(q), file, 0, 0, half, "after shrinking");
    void* r = mremap(q, half, size, MREMAP_MAYMOVE);
    if (r == MAP_FAILED) die(std::string("mremap (grow): ") + std::strerror(errno));
    check(static_cast<unsigned char*>(r), file, 0, 0, size, "after growing");
    std::printf("ok mremap: %zu -> %zu -> %zu bytes\n", size, half, size);
  } else if (mode == "madvise") {
    unsigned char* p = map(fd, size, 0);
    if (madvise(p, size, MADV_WILLNEED) != 0) die(std::string("MADV_WILLNEED: ") + std::strerror(errno));
    check(p, file, 0, 0, size, "after MADV_WILLNEED");
    if (madvise(p, size, MADV_DONTNEED) != 0) die(std::string("MADV_DONTNEED: ") + std::strerror(errno));
    check(p, file, 0, 0, size, "after MADV_DONTNEED");
    std::printf("ok madvise: %zu bytes twice\n", size);
  } else if (mode == "fork") {
    unsigned char* p = map(fd, size, 0);
    check(p, file, 0, 0, size / 2, "parent before fork");
    std::fflush(stdout);
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
      check(p, file, 0, 0, size, "child");
      std::printf("ok fork: child read %zu bytes\n", size);
      std::fflush(stdout);
      _exit(0);
    }
    int status = 0;
    if (waitpid(child, &status, 0) != child) die("waitpid");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("the child failed (status " + std::to_string(status) + ")");
    check(p, file, 0, 0, size, "parent after fork");
    std::printf("ok fork: parent read %zu bytes\n", size);
  } else if (mode == "emfile") {
    // No descriptor free: new ones must be below fd + 1, and the holes
    // below it are filled.
    struct rlimit rl, before;
    getrlimit(RLIMIT_NOFILE, &before);
    rl = before;
    rl.rlim_cur = static_cast<rlim_t>(fd + 1);
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) die("setrlimit");
    std::vector<int> fillers;
    for (int d; (d = dup(fd)) >= 0;) fillers.push_back(d);
    if (errno != EMFILE) die(std::string("dup: ") + std::strerror(errno));
    unsigned char* p = map(fd, size, 0);
    for (int d : fillers) close(d);  // descriptors again, for what runs at exit
    setrlimit(RLIMIT_NOFILE, &before);
    check(p, file, 0, 0, size, "emfile");
    std::printf("ok emfile: read %zu bytes\n", size);
  } else if (mode == "threads") {
    constexpr int kThreads = 4, kRounds = 20;
    std::atomic<int> waiting{kThreads};
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i)
      threads.emplace_back([&] {
        waiting.fetch_sub(1);
        while (waiting.load() > 0) {
        }
        size_t half = size / 2 / kPage * kPage;
        for (int round = 0; round < kRounds; ++round) {
          unsigned char* p = map(fd, size, 0);
          check(p, file, 0, 0, size, "threads");
          if (round % 2 == 0) {
            if (munmap(p, size) != 0) die(std::string("munmap: ") + std::strerror(errno));
            continue;
          }
          // In two halves: the first is a partial munmap.
          if (munmap(p, half) != 0) die(std::string("munmap: ") + std::strerror(errno));
          check(p, file, 0, half, size, "threads, second half");
          if (munmap(p + half, size - half) != 0) die(std::string("munmap: ") + std::strerror(errno));
        }
      });
    for (std::thread& t : threads) t.join();
    std::printf("ok threads: %d mappings checked\n", kThreads * kRounds);
  } else {
    die("unknown mode " + mode);
  }
  return 0;
}
