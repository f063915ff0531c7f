// SPDX-License-Identifier: Apache-2.0
#include "http_url.h"

#include <charconv>

#include "faultline/error.h"

namespace faultline::detail {

namespace {

// The URL up to its query, for an error about the URL itself.
std::string without_query(const std::string& url) {
  size_t q = url.find_first_of("?#");
  return q == std::string::npos ? url : url.substr(0, q) + "?...";
}

}  // namespace

HttpUrl parse_http_url(const std::string& url) {
  HttpUrl u;
  auto bad = [&](const std::string& why) { return Error("URL " + without_query(url) + ": " + why, EINVAL); };
  std::string rest;
  if (url.rfind("http://", 0) == 0) {
    rest = url.substr(7);
  } else if (url.rfind("https://", 0) == 0) {
    u.tls = true;
    rest = url.substr(8);
  } else {
    throw bad("must start with http:// or https://");
  }
  size_t slash = rest.find_first_of("/?#");
  std::string authority = rest.substr(0, slash);
  u.target = slash == std::string::npos ? "/" : rest.substr(slash);
  if (size_t hash = u.target.find('#'); hash != std::string::npos) u.target.resize(hash);  // (never sent)
  if (u.target.empty() || u.target[0] != '/') u.target = "/" + u.target;
  if (authority.find('@') != std::string::npos)
    throw bad("credentials in the URL are not supported: use HttpOptions.auth_header or auth_file");
  std::string port;
  if (!authority.empty() && authority[0] == '[') {
    size_t close = authority.find(']');
    if (close == std::string::npos) throw bad("unterminated [IPv6 address]");
    u.host = authority.substr(1, close - 1);
    std::string after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') throw bad("unexpected characters after the [IPv6 address]");
      port = after.substr(1);
    }
  } else {
    size_t colon = authority.rfind(':');
    u.host = authority.substr(0, colon);
    if (colon != std::string::npos) port = authority.substr(colon + 1);
  }
  if (u.host.empty()) throw bad("no host");
  for (char c : u.target)
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) throw bad("the path holds a space or control character");
  u.port = u.tls ? 443 : 80;
  if (!port.empty()) {
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535)
      throw bad("bad port '" + port + "'");
    u.port = static_cast<uint16_t>(value);
  }
  bool v6 = u.host.find(':') != std::string::npos;
  std::string host = v6 ? "[" + u.host + "]" : u.host;
  bool default_port = u.port == (u.tls ? 443 : 80);
  u.host_header = default_port ? host : host + ":" + std::to_string(u.port);
  size_t q = u.target.find('?');
  u.shown = std::string(u.tls ? "https://" : "http://") + u.host_header +
            (q == std::string::npos ? u.target : u.target.substr(0, q) + "?...");
  return u;
}

}  // namespace faultline::detail
