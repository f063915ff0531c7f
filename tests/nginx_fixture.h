// SPDX-License-Identifier: Apache-2.0
// A real nginx (Debian's nginx-light, /usr/sbin/nginx) for the HTTP tests:
// one process (master_process off) with its own prefix, config, pid file and
// logs in a temporary directory, listening on a free port of 127.0.0.1,
// serving the files of `root()`. It never touches the system's nginx.
//
// Locations: /     plain static files, with Range support
//            /norange/   the same files, Range ignored (max_ranges 0)
//            /slow/      the same files at slow_rate bytes/s (limit_rate)
//            /auth/      the same files, 401 unless Authorization is `auth`
// With tls, it serves https with a self-signed certificate made here for
// "localhost" and 127.0.0.1 (ca_file() is that certificate).
#pragma once

#include <netinet/in.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>

#include "snapshot_test_util.h"

namespace faultline::test {

class Nginx {
 public:
  static constexpr const char* kBinary = "/usr/sbin/nginx";
  static bool available() { return ::access(kBinary, X_OK) == 0; }

  explicit Nginx(bool tls = false, unsigned slow_rate = 16 * 1024, std::string auth = "none")
      : tls_(tls), slow_rate_(slow_rate), auth_(std::move(auth)) {
    std::filesystem::create_directories(dir_.file("root"));
    std::filesystem::create_directories(dir_.file("tmp"));
    if (tls_) make_certificate();
    start();
  }
  ~Nginx() { kill(); }
  Nginx(const Nginx&) = delete;
  Nginx& operator=(const Nginx&) = delete;

  std::string root() const { return dir_.file("root"); }
  std::string ca_file() const { return dir_.file("cert.pem"); }
  uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }
  // "http://127.0.0.1:PORT/PATH" (https://localhost:PORT/PATH with tls).
  std::string url(const std::string& path) const {
    return std::string(tls_ ? "https://localhost:" : "http://127.0.0.1:") + std::to_string(port_) + "/" + path;
  }
  std::string error_log() const {
    std::ifstream in(dir_.file("error.log"));
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  // SIGKILL: the server is gone at once, its connections reset.
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }

 private:
  void make_certificate() {
    std::string cmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "
                      "/CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " +
                      dir_.file("key.pem") + " -out " + dir_.file("cert.pem") + " 2>" + dir_.file("openssl.log");
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("openssl req failed: see " + dir_.file("openssl.log"));
  }

  static uint16_t free_port() {
    int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (s < 0 || ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      throw std::runtime_error("no free port on 127.0.0.1");
    ::close(s);
    return ntohs(a.sin_port);
  }

  bool accepts() const {
    int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port_);
    bool ok = ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(s);
    return ok;
  }

  void write_config() {
    std::string p = dir_.path;
    std::ofstream c(dir_.file("nginx.conf"));
    c << "daemon off;\nmaster_process off;\nworker_processes 1;\n"
      << "pid " << p << "/nginx.pid;\nerror_log " << p << "/error.log warn;\n"
      << "events { worker_connections 256; }\n"
      << "http {\n  access_log off;\n  default_type application/octet-stream;\n"
      << "  client_body_temp_path " << p << "/tmp/body;\n  proxy_temp_path " << p << "/tmp/proxy;\n"
      << "  keepalive_requests 100000;\n"
      << "  server {\n    listen 127.0.0.1:" << port_ << (tls_ ? " ssl" : "") << ";\n";
    if (tls_)
      c << "    ssl_certificate " << p << "/cert.pem;\n    ssl_certificate_key " << p << "/key.pem;\n";
    c << "    root " << p << "/root;\n"
      << "    location /norange/ { alias " << p << "/root/; max_ranges 0; }\n"
      << "    location /slow/ { alias " << p << "/root/; limit_rate " << slow_rate_ << "; }\n"
      << "    location /auth/ { alias " << p << "/root/; if ($http_authorization != \"" << auth_
      << "\") { return 401; } }\n"
      << "  }\n}\n";
  }

  void start() {
    for (int attempt = 0; attempt < 20; ++attempt) {
      port_ = free_port();
      write_config();
      std::string prefix = dir_.path + "/", conf = dir_.file("nginx.conf"), elog = dir_.file("error.log");
      const char* argv[] = {kBinary, "-p", prefix.c_str(), "-c", conf.c_str(), "-e", elog.c_str(), nullptr};
      pid_ = ::fork();
      if (pid_ < 0) throw std::runtime_error("cannot fork for nginx");
      if (pid_ == 0) {
        // Dies with the test process, even one that crashed; keeps no pipe of ours open.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        int null = ::open("/dev/null", O_RDWR);
        ::dup2(null, 0), ::dup2(null, 1), ::dup2(null, 2);
        ::execv(kBinary, const_cast<char**>(argv));
        ::_exit(127);
      }
      auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
      while (std::chrono::steady_clock::now() < until) {
        int status;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) {
          pid_ = -1;
          break;  // it exited: most likely the port was taken meanwhile; try another
        }
        if (accepts()) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      kill();
    }
    throw std::runtime_error("nginx did not start; its log: " + error_log());
  }

  TempDir dir_;
  bool tls_;
  unsigned slow_rate_;
  std::string auth_;
  uint16_t port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace faultline::test
