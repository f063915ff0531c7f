// SPDX-License-Identifier: Apache-2.0
// Commands that read an image or a snapshot accept an http:// or https://
// URL wherever they accept a file. UrlArgs holds the options that say how
// to reach one (CA file, certificate check opt-out, auth header file), added
// to a command in one call so every command spells them the same way.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "faultline/http_backend.h"

namespace faultline::tools {

struct UrlArgs {
  std::string ca_file;
  bool insecure = false;
  std::string auth_file;

  // Adds --ca-file, --insecure and --auth-file to `cmd`.
  void add_to(CLI::App& cmd);
  // An HttpBackend over `url` with these options. Throws Error (naming the
  // URL without its query, which may be a credential) if it cannot be opened.
  std::shared_ptr<HttpBackend> open(const std::string& url) const;
};

}  // namespace faultline::tools
