// SPDX-License-Identifier: Apache-2.0
// A private nginx on loopback (nginx_server.h).
#include "nginx_server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <thread>

#include "faultline/error.h"

namespace faultline::tools {

namespace {

sockaddr_in loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  return a;
}

// A port of 127.0.0.1 that is free now (the kernel's pick); nginx may still
// lose it to another process before it binds, and start() then retries.
uint16_t free_port() {
  const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) throw_errno("socket", errno);
  sockaddr_in a = loopback(0);
  socklen_t len = sizeof a;
  if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    const int e = errno;
    ::close(s);
    throw_errno("no free port on 127.0.0.1", e);
  }
  ::close(s);
  return ntohs(a.sin_port);
}

std::string make_temp_dir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/faultline-nginx-XXXXXX";
  if (!::mkdtemp(tmpl.data())) throw_errno("mkdtemp " + tmpl, errno);
  return tmpl;
}

}  // namespace

std::string NginxServer::binary() {
  const char* env = std::getenv("FAULTLINE_NGINX");
  return env && *env ? env : kBinary;
}

bool NginxServer::available() { return ::access(binary().c_str(), X_OK) == 0; }

std::string NginxServer::why_unavailable() {
  return available() ? "" : "nginx is not installed (no " + binary() + "; Debian: apt-get install nginx-light)";
}

NginxServer::NginxServer(const NginxOptions& options) : options_(options), dir_(make_temp_dir()) {
  try {
    root_ = options_.root.empty() ? dir_ + "/root" : options_.root;
    std::filesystem::create_directories(dir_ + "/root");
    std::filesystem::create_directories(dir_ + "/tmp");
    if (options_.tls) make_certificate();
    start();
  } catch (...) {
    kill();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    throw;
  }
}

NginxServer::~NginxServer() {
  kill();
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);  // symlinks in root are removed, never what they point to
}

std::string NginxServer::url(const std::string& path) const {
  return std::string(options_.tls ? "https://localhost:" : "http://127.0.0.1:") + std::to_string(port_) + "/" + path;
}

std::string NginxServer::error_log() const {
  std::ifstream in(dir_ + "/error.log");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void NginxServer::kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

void NginxServer::make_certificate() {
  const std::string cmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "
                          "/CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " +
                          dir_ + "/key.pem -out " + dir_ + "/cert.pem 2>" + dir_ + "/openssl.log";
  if (std::system(cmd.c_str()) != 0) throw Error("openssl req failed: see " + dir_ + "/openssl.log");
}

bool NginxServer::owns_pid_file() const {
  std::ifstream in(dir_ + "/nginx.pid");
  pid_t pid = -1;
  return (in >> pid) && pid == pid_;
}

bool NginxServer::accepts() const {
  const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return false;
  sockaddr_in a = loopback(port_);
  const bool ok = ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(s);
  return ok;
}

void NginxServer::write_config() {
  const std::string& p = dir_;
  std::ofstream c(p + "/nginx.conf");
  c << "daemon off;\nmaster_process off;\nworker_processes 1;\n"
    << "pid " << p << "/nginx.pid;\nerror_log " << p << "/error.log warn;\n"
    << "events { worker_connections 256; }\n"
    << "http {\n  access_log off;\n  default_type application/octet-stream;\n"
    << "  client_body_temp_path " << p << "/tmp/body;\n  proxy_temp_path " << p << "/tmp/proxy;\n"
    // sendfile: bodies go from the page cache to the socket without a copy
    // through nginx (Debian's own nginx.conf turns it on too).
    << "  keepalive_requests 100000;\n  sendfile on;\n"
    << "  server {\n    listen 127.0.0.1:" << port_ << (options_.tls ? " ssl" : "") << ";\n";
  if (options_.tls) c << "    ssl_certificate " << p << "/cert.pem;\n    ssl_certificate_key " << p << "/key.pem;\n";
  c << "    root " << root_ << ";\n"
    << "    location /norange/ { alias " << root_ << "/; max_ranges 0; }\n"
    << "    location /slow/ { alias " << root_ << "/; limit_rate " << options_.slow_rate << "; }\n"
    << "    location /close2/ { alias " << root_ << "/; keepalive_requests 2; }\n"
    << "    location /auth/ { alias " << root_ << "/; if ($http_authorization != \"" << options_.auth
    << "\") { return 401; } }\n"
    << "  }\n}\n";
  if (!c.flush()) throw Error("cannot write " + p + "/nginx.conf");
}

void NginxServer::start() {
  for (int attempt = 0; attempt < 20; ++attempt) {
    port_ = free_port();
    write_config();
    std::filesystem::remove(dir_ + "/nginx.pid");
    const std::string prefix = dir_ + "/", conf = dir_ + "/nginx.conf", elog = dir_ + "/error.log", bin = binary();
    const char* argv[] = {bin.c_str(), "-p", prefix.c_str(), "-c", conf.c_str(), "-e", elog.c_str(), nullptr};
    pid_ = ::fork();
    if (pid_ < 0) throw_errno("cannot fork for nginx", errno);
    if (pid_ == 0) {
      // Dies with its owner, even one that crashed; keeps no pipe of ours open.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      const int null = ::open("/dev/null", O_RDWR);
      ::dup2(null, 0), ::dup2(null, 1), ::dup2(null, 2);
      ::execv(bin.c_str(), const_cast<char**>(argv));
      ::_exit(127);
    }
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < until) {
      int status;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        break;  // it exited: most likely the port was taken meanwhile; try another
      }
      // nginx writes its pid file after it has bound its socket: a
      // connection accepted before that would be another's listener.
      if (owns_pid_file() && accepts()) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    kill();
  }
  throw Error("nginx did not start; its log: " + error_log());
}

}  // namespace faultline::tools
