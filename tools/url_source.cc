// SPDX-License-Identifier: Apache-2.0
#include "url_source.h"

namespace faultline::tools {

void UrlArgs::add_to(CLI::App& cmd) {
  cmd.add_option("--ca-file", ca_file, "for an https URL: trust the CA certificates in\nthis PEM file (default: the system's)")
      ->type_name("PEM");
  cmd.add_flag("--insecure", insecure, "for an https URL: do not verify the certificate\n(tests only)");
  cmd.add_option("--auth-file", auth_file,
                 "for a URL: send the header in this file, a line\n"
                 "'Name: value' or a bare bearer token")
      ->type_name("FILE");
}

std::shared_ptr<HttpBackend> UrlArgs::open(const std::string& url) const {
  HttpOptions o;
  o.url = url;
  o.ca_file = ca_file;
  o.insecure_skip_verify = insecure;
  o.auth_file = auth_file;
  return std::make_shared<HttpBackend>(o);
}

}  // namespace faultline::tools
