// SPDX-License-Identifier: Apache-2.0
// faultline-http configurations: the faultline runtime over an HttpBackend
// reading from a private nginx on loopback (tools/nginx/nginx_server.h),
// started by setup.cc before the first run and stopped after the last.
// nginx serves the dataset file (and the VM image's snapshot) from the page
// cache, so the numbers measure HTTP over loopback and nginx, not the disk:
// compare them with faultline-remote, whose server serves from memory.
// Every run opens a fresh backend (its connections, its pinning request).
#include <memory>
#include <string>

#include "bench.h"
#include "faultline/error.h"
#include "faultline/http_backend.h"

namespace fbench {

bool is_http(FlConfig cfg) { return cfg == FlConfig::kHttp || cfg == FlConfig::kHttp4k; }

std::shared_ptr<faultline::Backend> make_http_backend(const std::string& url) {
  if (url.empty()) throw faultline::Error("no nginx (it failed to start; see above)");
  faultline::HttpOptions o;  // the defaults: what a user gets without tuning
  o.url = url;
  return faultline::open_http(o);
}

}  // namespace fbench
