// SPDX-License-Identifier: Apache-2.0
// The HTTP tests' nginx: tools/nginx/nginx_server.h (shared with
// faultline-bench and with_nginx), spelt as the tests construct it.
#pragma once

#include <string>
#include <utility>

#include "nginx_server.h"

namespace faultline::test {

class Nginx : public tools::NginxServer {
 public:
  explicit Nginx(bool tls = false, unsigned slow_rate = 16 * 1024, std::string auth = "none")
      : NginxServer(tools::NginxOptions{tls, slow_rate, std::move(auth), {}}) {}
};

}  // namespace faultline::test
