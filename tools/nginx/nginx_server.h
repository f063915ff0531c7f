// SPDX-License-Identifier: Apache-2.0
// NginxServer: a private, real nginx (Debian's nginx-light, /usr/sbin/nginx)
// on loopback, for the HTTP tests, the benchmark and the with_nginx helper.
// One process (master_process off) with its own prefix, config, pid file and
// logs in a fresh temporary directory, listening on a port of 127.0.0.1
// that was free (a port taken meanwhile makes it retry on another: it never
// shares or takes over another's socket). It never touches the system's
// nginx. The destructor kills it and removes the directory; if the owning
// process dies first, the kernel kills nginx (PR_SET_PDEATHSIG).
//
// Locations: /          the files of root(), with Range support
//            /norange/  the same files, Range ignored (max_ranges 0)
//            /slow/     the same files at slow_rate bytes/s (limit_rate)
//            /auth/     the same files, 401 unless Authorization is `auth`
//            /close2/   the same files, each connection closed after 2 answers
// With tls, it serves https with a self-signed certificate made here (with
// the openssl command) for "localhost" and 127.0.0.1; ca_file() is it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

namespace faultline::tools {

struct NginxOptions {
  bool tls = false;
  unsigned slow_rate = 16 * 1024;  // bytes/s under /slow/
  std::string auth = "none";       // the Authorization value /auth/ wants
  // Serve this existing directory instead of an empty one of the server's
  // own. It must stay there while the server runs; it is never removed.
  std::string root;
};

class NginxServer {
 public:
  static constexpr const char* kBinary = "/usr/sbin/nginx";
  // kBinary, or $FAULTLINE_NGINX if set (a test of what happens without
  // nginx points it at nothing).
  static std::string binary();
  // Whether nginx is installed; if not, why_unavailable() says so.
  static bool available();
  static std::string why_unavailable();

  // Starts nginx and waits until it accepts connections. Throws
  // faultline::Error (with nginx's log) if it cannot.
  explicit NginxServer(const NginxOptions& options = {});
  ~NginxServer();
  NginxServer(const NginxServer&) = delete;
  NginxServer& operator=(const NginxServer&) = delete;

  const std::string& root() const { return root_; }
  std::string ca_file() const { return dir_ + "/cert.pem"; }
  uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }
  // "http://127.0.0.1:PORT/PATH" (https://localhost:PORT/PATH with tls).
  std::string url(const std::string& path) const;
  std::string error_log() const;

  // SIGKILL: the server is gone at once, its connections reset.
  void kill();

 private:
  void make_certificate();
  void write_config();
  void start();
  bool owns_pid_file() const;
  bool accepts() const;

  NginxOptions options_;
  std::string dir_;   // the private directory (prefix, config, logs)
  std::string root_;  // what / serves
  uint16_t port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace faultline::tools
