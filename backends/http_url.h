// SPDX-License-Identifier: Apache-2.0
// The parts of an http:// or https:// URL that HttpBackend needs, and the
// form of it that may appear in logs and errors (without the query, which
// in a presigned URL is a credential).
#pragma once

#include <cstdint>
#include <string>

namespace faultline::detail {

struct HttpUrl {
  bool tls = false;
  std::string host;    // without brackets for IPv6
  uint16_t port = 0;
  std::string target;  // path and query, "/" at least
  std::string host_header;  // "host[:port]" as sent in Host:
  std::string shown;   // scheme://host[:port]/path, "?..." for a query
};

// Throws Error naming the URL (as shown) and what is wrong with it.
HttpUrl parse_http_url(const std::string& url);

}  // namespace faultline::detail
