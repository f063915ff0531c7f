// SPDX-License-Identifier: Apache-2.0
// Command-line conventions shared by the `faultline` tool, faultline-bench,
// the samples and the bench helpers, on top of CLI11 (Debian's libcli11-dev).
//
// One spelling of sizes everywhere: a number with an optional binary suffix,
// K, M, G or T, optionally followed by "iB" or "B", in any case ("64K",
// "1GiB", "4096"). Values are powers of 1024; an overflow or an unknown
// suffix is a usage error naming the option and the text.
//
// Programs build a CLI::App, add their options with the helpers below, and
// end main with `return faultline::cli::run(app, argc, argv, body)`: usage
// errors print the message and a pointer to --help with exit status 2, a
// faultline::Error thrown by the body prints "PROGRAM: message", exit 1
// (PROGRAM includes the subcommand given, "faultline snapshot create").
// Output that could not be written (a full disk, a closed pipe) is an error
// too, exit 1: a report cut short must not look complete.
#pragma once

#include <CLI/CLI.hpp>

#include <bit>
#include <cctype>
#include <cstdint>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iostream>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "faultline/error.h"
#include "faultline/version.h"

namespace faultline::cli {

// Bytes in `text` ("64K", "2MiB", "4096"), or false if it is not a size.
inline bool parse_size(std::string_view text, uint64_t& out) {
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  if (digits == 0) return false;
  uint64_t value = 0;
  for (size_t i = 0; i < digits; ++i) {
    uint64_t d = static_cast<uint64_t>(text[i] - '0');
    if (value > (std::numeric_limits<uint64_t>::max() - d) / 10) return false;
    value = value * 10 + d;
  }
  std::string suffix;
  for (char c : text.substr(digits)) suffix += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (suffix.size() >= 3 && suffix.compare(suffix.size() - 2, 2, "IB") == 0) suffix.resize(suffix.size() - 2);
  else if (suffix.size() == 2 && suffix[1] == 'B') suffix.resize(1);
  int shift = 0;
  if (suffix.empty()) shift = 0;
  else if (suffix == "K") shift = 10;
  else if (suffix == "M") shift = 20;
  else if (suffix == "G") shift = 30;
  else if (suffix == "T") shift = 40;
  else return false;
  if (shift && value > (std::numeric_limits<uint64_t>::max() >> shift)) return false;
  out = value << shift;
  return true;
}

// Adds --NAME taking a size (see the header) into `dest`, within [lo, hi].
template <typename T>
CLI::Option* add_size(CLI::App& app, const std::string& name, T& dest, const std::string& description,
                      uint64_t lo = 0, uint64_t hi = std::numeric_limits<T>::max()) {
  CLI::callback_t parse = [&dest, name, lo, hi](const CLI::results_t& r) {
    uint64_t v = 0;
    if (r.size() != 1 || !parse_size(r[0], v))
      throw CLI::ValidationError(name, "expected a size such as 4096, 64K, 2M or 1G, got '" +
                                           (r.empty() ? std::string() : r[0]) + "'");
    if (v < lo || v > hi)
      throw CLI::ValidationError(name, "must be from " + std::to_string(lo) + " to " + std::to_string(hi) +
                                           " bytes, got '" + r[0] + "'");
    dest = static_cast<T>(v);
    return true;
  };
  return app.add_option(name, parse, description)->type_name("SIZE")->type_size(1)->expected(1);
}

// For add_size options: the size must be a power of two (chunk sizes).
inline CLI::Validator power_of_two() {
  return CLI::Validator(
      [](std::string& text) {
        uint64_t v = 0;
        if (!parse_size(text, v) || std::has_single_bit(v)) return std::string();  // add_size reports non-sizes
        return "must be a power of two, got '" + text + "'";
      },
      "");
}

// For add_size options: the size must be a multiple of `unit` (page sizes).
inline CLI::Validator multiple_of(uint64_t unit) {
  return CLI::Validator(
      [unit](std::string& text) {
        uint64_t v = 0;
        if (!parse_size(text, v) || v % unit == 0) return std::string();  // add_size reports non-sizes
        return "must be a multiple of " + std::to_string(unit) + ", got '" + text + "'";
      },
      "");
}

// Adds --version, printing "PROGRAM VERSION" (the library's version).
inline void add_version(CLI::App& app, const std::string& program) {
  app.set_version_flag("--version", program + " " + faultline::version());
}

// Requires one of app's subcommands (add them first), `noun` naming them in
// messages ("command"): a word that is none of them is "unknown command
// 'WORD' (one of: a, b)", where CLI11 alone would only say that one is
// required.
inline void require_subcommand(CLI::App& app, const std::string& noun) {
  app.require_subcommand(0, 1);
  app.allow_extras();  // leftovers reach the check below; subcommands added before do not inherit it
  app.final_callback([&app, noun] {
    if (!app.get_subcommands().empty()) return;
    std::string names;
    for (const CLI::App* sub : app.get_subcommands({})) names += (names.empty() ? "" : ", ") + sub->get_name();
    const std::vector<std::string> extra = app.remaining();
    if (extra.empty()) throw CLI::RequiredError("a " + noun + " (one of: " + names + ")");
    const std::string what = extra[0].size() > 1 && extra[0][0] == '-' ? "option" : noun;
    throw CLI::ExtrasError("unknown " + what + " '" + extra[0] + "' (" + noun + "s: " + names + ")",
                           CLI::ExitCodes::ExtrasError);
  });
}

// "PROGRAM SUBCOMMAND..." as given on the command line, for messages.
inline std::string command_name(const CLI::App& app) {
  std::string name = app.get_name();
  for (const CLI::App* a = &app; !a->get_subcommands().empty();) {
    a = a->get_subcommands().front();
    name += " " + a->get_name();
  }
  return name;
}

// Parses argv and runs `body`; returns the process exit status (see header).
// Flushes standard output and turns a failed write into exit status 1.
inline int finish_output(const CLI::App& app, int status) {
  std::cout.flush();
  errno = 0;
  bool failed = std::fflush(stdout) != 0 || std::ferror(stdout) || !std::cout;
  if (!failed) return status;
  // (errno is only still known when the final flush failed; an earlier
  // write's is gone, its stream error stays.)
  int err = errno;
  std::fprintf(stderr, "%s: cannot write to standard output%s%s; the output is incomplete\n",
               command_name(app).c_str(), err ? ": " : "", err ? std::strerror(err) : "");
  return status == 0 ? 1 : status;
}

inline int run(CLI::App& app, int argc, char** argv, const std::function<int()>& body) {
  int status = 0;
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return finish_output(app, app.exit(e));
  } catch (const CLI::CallForAllHelp& e) {
    return finish_output(app, app.exit(e));
  } catch (const CLI::CallForVersion& e) {
    return finish_output(app, app.exit(e));
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "%s: %s\nRun with --help for more information.\n", command_name(app).c_str(), e.what());
    return 2;
  }
  try {
    status = body();
  } catch (const faultline::Error& e) {
    std::fprintf(stderr, "%s: %s\n", command_name(app).c_str(), e.what());
    status = 1;
  }
  return finish_output(app, status);
}

}  // namespace faultline::cli
