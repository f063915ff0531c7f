// SPDX-License-Identifier: Apache-2.0
// lazy_dataset: point lookups and short range scans over a large file of
// records, through a faultline Region on a FileBackend: only the chunks the
// queries touch are read. The same queries run over a plain mmap of the file
// for comparison; every record read is checked either way.
//
// The data set and its queries live in record_file.h, the measuring, the
// mmap baseline and the table in run_report.h; this file is the faultline
// use. Run with --help for the options.
//
// Exit status: 0 every record verified; 1 a record failed verification, or a
// run failed or timed out; 2 bad arguments or an unusable FILE.
#include <faultline/faultline.h>

#include <cli.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "record_file.h"
#include "run_report.h"
#include "sample_util.h"

namespace {

using record_file::kRecordSize;
using run_report::RunReport;

struct Options {
  std::string file;  // empty: generate
  std::string dir;
  uint64_t size = 1ull << 30;
  uint64_t lookups = 2000;
  uint64_t scans = 4;
  uint64_t scan_records = 1024;
  uint64_t seed = 1;
  uint32_t fill_size = 64 * 1024;
  bool direct = false;
  std::string only;  // "", "faultline" or "mmap"
  int repeat = 1;
  bool cold_global = false;
  int timeout_s = 60;
  bool verbose = false;
};

// The queries through faultline: map the file, read through the mapping.
RunReport run_faultline(faultline::Runtime& rt, std::shared_ptr<faultline::FileBackend> backend,
                        const record_file::Plan& plan, const Options& o) {
  faultline::RegionOptions ro;
  ro.fill_size = o.fill_size;
  faultline::Region region = rt.map(backend, ro);
  RunReport rep = run_report::measure("faultline", o.timeout_s, region.data(), [&] {
    return record_file::run_queries(region.data(), region.size(), plan);
  });
  rep.stats = region.stats();
  return rep;
}

int run(const Options& o) {
  uint64_t record_count = 0;
  std::string path = o.file;
  if (path.empty()) {
    path = record_file::open_or_generate(o.dir, o.size / kRecordSize * kRecordSize, &record_count);
  } else {
    std::string why;
    record_count = record_file::check_file(path, &why);  // checked when parsed; may have changed since
    if (record_count == 0) throw faultline::Error(path + ": " + why);
    std::printf("data set: %s", path.c_str());
  }
  const uint64_t file_size = record_count * kRecordSize;
  std::printf(", %s, %llu records of %llu bytes\n", sample::human_bytes(file_size).c_str(),
              static_cast<unsigned long long>(record_count), static_cast<unsigned long long>(kRecordSize));

  const record_file::Plan plan = record_file::make_plan(record_count, o.lookups, o.scans, o.scan_records, o.seed);
  std::printf("queries: %zu point lookups + %zu range scans of %llu records (seed %llu): %s of records, %s of the file\n",
              plan.lookups.size(), plan.scans.size(),
              static_cast<unsigned long long>(plan.scans.empty() ? 0 : plan.scans[0].second),
              static_cast<unsigned long long>(o.seed), sample::human_bytes(plan.records * kRecordSize).c_str(),
              sample::percent(plan.records * kRecordSize, file_size).c_str());
  const bool with_faultline = o.only != "mmap", with_mmap = o.only != "faultline";
  if (with_mmap) {
    const auto kb = run_report::read_ahead_kb(path);
    std::printf("mmap: MAP_SHARED, default advice; read_ahead_kb of the device: %s\n",
                kb ? (std::to_string(*kb) + " (mmap reads up to that much around each major fault)").c_str() : "unknown");
  }

  std::unique_ptr<faultline::Runtime> rt;
  std::shared_ptr<faultline::FileBackend> backend;
  if (with_faultline) {
    rt = std::make_unique<faultline::Runtime>();
    faultline::FileBackendOptions bo;
    bo.direct = o.direct;
    backend = std::make_shared<faultline::FileBackend>(path, bo);
    std::printf("faultline: userfaultfd %s; fill_size %s; backend %s\n", rt->mode().describe().c_str(),
                sample::human_bytes(o.fill_size).c_str(), backend->name().c_str());
  }
  std::printf("%s\n", sample::cold_note(path, o.cold_global).c_str());
  record_file::install_sigbus_handler();

  int failures = 0;
  std::vector<uint64_t> wall_fl, wall_mm;
  for (int round = 0; round < o.repeat; ++round) {
    // Each run starts cold: the other run's pages must not serve this one.
    std::vector<RunReport> runs;
    if (with_faultline) {
      sample::start_cold(path, o.cold_global);
      runs.push_back(run_faultline(*rt, backend, plan, o));
    }
    if (with_mmap) {
      sample::start_cold(path, o.cold_global);
      runs.push_back(run_report::run_mmap(path, file_size, plan, o.timeout_s));
    }

    std::printf("\n");
    if (o.repeat > 1) std::printf("round %d of %d\n", round + 1, o.repeat);
    run_report::print_table(runs, file_size);
    for (const RunReport& r : runs) {
      (r.name == "mmap" ? wall_mm : wall_fl).push_back(r.q.wall_ns);
      if (const std::string why = r.q.failure(plan); !why.empty()) {
        ++failures;
        std::printf("FAIL (%s): %s\n", r.name.c_str(), why.c_str());
      }
      if (r.stats && r.stats->errors)
        std::printf("note (%s): faultline poisoned %llu chunks it could not read\n", r.name.c_str(),
                    static_cast<unsigned long long>(r.stats->errors));
      if (o.verbose && r.stats) std::printf("%s stats: %s\n", r.name.c_str(), r.stats->to_json().c_str());
    }
  }
  if (o.repeat > 1) {
    std::printf("\nmedian wall time over %d rounds:", o.repeat);
    if (!wall_fl.empty()) std::printf(" faultline %s", sample::human_ns(sample::quantile(wall_fl, 0.5)).c_str());
    if (!wall_mm.empty()) std::printf(" mmap %s", sample::human_ns(sample::quantile(wall_mm, 0.5)).c_str());
    std::printf("\n");
  }
  run_report::print_notes();
  if (failures) {
    std::printf("\nresult: FAIL\n");
    return 1;
  }
  std::printf("\nresult: OK, every record verified in every run\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  namespace cli = faultline::cli;
  Options o;
  const char* tmp = std::getenv("TMPDIR");
  o.dir = std::string(tmp && *tmp ? tmp : "/tmp") + "/faultline-lazy-dataset";

  CLI::App app(
      "Answers point lookups and short range scans over a file of 256-byte records\n"
      "(id, key, value, checksum), first through a faultline region on a FileBackend,\n"
      "then through plain mmap, and compares wall time, storage reads, faults and how\n"
      "much of the file each one loaded. Every record read is verified. Each run\n"
      "starts with the file's pages evicted from the page cache (--cold: the whole\n"
      "cache dropped).\n\n"
      "Without FILE, a deterministic data set is generated in --dir (reused if it is\n"
      "already there). FILE must be one this program generated.",
      "lazy_dataset");
  app.footer(
      "Exit status: 0 all records verified; 1 a record failed verification, or a run\n"
      "failed or timed out; 2 bad arguments or an unusable FILE.");
  cli::add_version(app, "lazy_dataset");
  CLI::Option* file = app.add_option("FILE", o.file, "a data set this program generated")
                          ->type_name("")
                          ->check(CLI::Validator(
                              [](std::string& path) {
                                std::string why;
                                return record_file::check_file(path, &why) ? std::string() : path + ": " + why;
                              },
                              ""));
  CLI::Option* dir = app.add_option("--dir", o.dir, "where to generate/reuse the data set\n(default $TMPDIR/faultline-lazy-dataset)")
                         ->type_name("DIR");
  CLI::Option* size = cli::add_size(app, "--size", o.size,
                                    "size of the generated file (default 1G; at\nleast 64K; rounded down to 256 bytes)",
                                    64 * 1024);
  app.add_option("--lookups", o.lookups, "random point lookups (default 2000)")
      ->check(CLI::Range(0, 100'000'000).description(""))
      ->type_name("N");
  app.add_option("--scans", o.scans, "short range scans (default 4)")
      ->check(CLI::Range(0, 1'000'000).description(""))
      ->type_name("N");
  app.add_option("--scan-records", o.scan_records, "records per range scan (default 1024 = 256 KiB)")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 32).description(""))
      ->type_name("N");
  app.add_option("--seed", o.seed, "seed of the query mix (default 1)")->type_name("N");
  cli::add_size(app, "--fill-size", o.fill_size, "faultline RegionOptions.fill_size, a power of\ntwo from 4K to 2M (default 64K)",
                4096, 2u << 20)
      ->check(cli::power_of_two());
  app.add_flag("--direct", o.direct, "FileBackend with O_DIRECT");
  app.add_option("--only", o.only, "run only one of the two")
      ->check(CLI::IsMember({"faultline", "mmap"}).description(""))
      ->type_name("faultline|mmap");
  app.add_option("--repeat", o.repeat, "alternate the two runs N times (default 1)")
      ->check(CLI::Range(1, 100).description(""))
      ->type_name("N");
  sample::add_cold_flag(app, o.cold_global);
  app.add_option("--timeout", o.timeout_s, "give up on a run after this long (default 60)")
      ->check(CLI::Range(1, 86400).description(""))
      ->type_name("SECONDS");
  app.add_flag("-v,--verbose", o.verbose, "also print the faultline stats as JSON");
  app.callback([&o, file, dir, size] {
    if (file->count() && (dir->count() || size->count()))
      throw CLI::ValidationError(dir->count() ? "--dir" : "--size", "applies only to a generated data set, not to FILE");
    if (o.lookups == 0 && o.scans == 0) throw CLI::ValidationError("--lookups", "nothing to do: --lookups 0 and --scans 0");
  });
  return cli::run(app, argc, argv, [&] { return run(o); });
}
