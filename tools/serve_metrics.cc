// SPDX-License-Identifier: Apache-2.0
#include "serve_metrics.h"

#include <cstdio>
#include <string_view>

namespace faultline::tools {
namespace {

// A decimal without trailing zeros ("0.00005", "2.5", "5"): what Prometheus
// parses and people read.
std::string decimal(double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9f", value);
  std::string s = buf;
  while (!s.empty() && s.back() == '0') s.pop_back();
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

void metric(std::string& out, std::string_view name, std::string_view type, std::string_view help, uint64_t value) {
  out.append("# HELP ").append(name).append(" ").append(help).append("\n");
  out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
  out.append(name).append(" ").append(std::to_string(value)).append("\n");
}

}  // namespace

std::string page_server_metrics_text(const PageServerStats& s) {
  std::string out;
  const char* counter = "counter";
  metric(out, "faultline_page_server_requests_total", counter,
         "READ requests answered (with data, zeros or an error), counted when the answer is written.", s.requests);
  metric(out, "faultline_page_server_bytes_sent_total", counter, "Bytes of object data sent in DATA frames.",
         s.bytes_sent);
  metric(out, "faultline_page_server_zero_bytes_total", counter,
         "Bytes answered with a ZERO frame (all zero, not sent).", s.zero_bytes);
  metric(out, "faultline_page_server_read_errors_total", counter,
         "Backend reads that failed, answered with an I/O error.", s.read_errors);
  metric(out, "faultline_page_server_protocol_errors_total", counter,
         "Connections closed for a malformed frame or a broken limit.", s.protocol_errors);
  metric(out, "faultline_page_server_auth_failures_total", counter,
         "Connections closed for failing the shared-secret challenge.", s.auth_failures);
  metric(out, "faultline_page_server_idle_timeouts_total", counter, "Connections closed for silence.",
         s.idle_timeouts);
  metric(out, "faultline_page_server_connections_total", counter, "Connections accepted.", s.connections_accepted);
  metric(out, "faultline_page_server_connections_rejected_total", counter,
         "Connections refused at once because max-connections were open.", s.connections_rejected);
  metric(out, "faultline_page_server_connections_open", "gauge", "Connections open now.", s.connections_open);

  const std::string_view h = "faultline_page_server_request_duration_seconds";
  out.append("# HELP ").append(h).append(" From a READ request received to its answer written to the socket.\n");
  out.append("# TYPE ").append(h).append(" histogram\n");
  uint64_t cumulative = 0;
  for (size_t i = 0; i < s.latency_buckets.size(); ++i) {
    cumulative += s.latency_buckets[i];
    const std::string le =
        i < kPageServerLatencyBoundsUs.size() ? decimal(double(kPageServerLatencyBoundsUs[i]) / 1e6) : "+Inf";
    out.append(h).append("_bucket{le=\"").append(le).append("\"} ").append(std::to_string(cumulative)).append("\n");
  }
  out.append(h).append("_sum ").append(decimal(double(s.latency_sum_ns) / 1e9)).append("\n");
  out.append(h).append("_count ").append(std::to_string(cumulative)).append("\n");
  return out;
}

}  // namespace faultline::tools
