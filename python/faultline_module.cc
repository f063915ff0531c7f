// SPDX-License-Identifier: Apache-2.0
// The Python module `faultline`: a Runtime, Regions that export their memory
// through the buffer protocol (numpy.frombuffer, memoryview: zero-copy), and
// faultline::Error as faultline.Error. See docs/python.md.
//
// GIL: every call that can block (map, connect, prefetch, drain, flush,
// take_dirty, close, write_snapshot) runs without it. Touching region
// memory from Python (numpy reading a view) faults with the GIL held; that
// is fine, because the fault thread is C++ only and never takes the GIL.
//
// Lifetime: a buffer view holds a reference to its Region object (view->obj),
// so the memory outlives every view; close() while views exist raises
// BufferError instead of unmapping under them, as Python's mmap does.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "faultline/faultline.h"

namespace py = pybind11;

namespace {

// Takes the keyword arguments a function knows out of `kwargs`, one at a
// time, then rejects the rest by name: a misspelt option is an error, never
// silently ignored.
class Keywords {
 public:
  Keywords(std::string function, py::kwargs kwargs) : function_(std::move(function)), kwargs_(std::move(kwargs)) {}

  template <typename T>
  void take(const char* name, T& out) {
    if (!kwargs_.contains(name)) return;
    py::object value = kwargs_[name];
    PyDict_DelItemString(kwargs_.ptr(), name);
    try {
      out = value.cast<T>();
    } catch (const py::cast_error&) {
      throw py::type_error(function_ + ": " + name + " must be " + type_name<T>() + ", not " +
                           std::string(py::str(py::type::of(value).attr("__name__"))) + " " +
                           std::string(py::repr(value)));
    }
  }

  void reject_rest() const {
    if (kwargs_.empty()) return;
    std::string names;
    for (auto item : kwargs_) names += (names.empty() ? "" : ", ") + std::string(py::str(item.first));
    throw py::type_error(function_ + ": unknown keyword argument" + (kwargs_.size() > 1 ? "s " : " ") + names);
  }

 private:
  template <typename T>
  static const char* type_name() {
    if constexpr (std::is_same_v<T, bool>) return "a bool";
    else if constexpr (std::is_unsigned_v<T>) return "a non-negative int in range";
    else if constexpr (std::is_integral_v<T>) return "an int in range";
    else if constexpr (std::is_floating_point_v<T>) return "a number";
    else return "a str";
  }

  std::string function_;
  py::kwargs kwargs_;
};

void take_budget(Keywords& k, faultline::MemoryBudget& b) {
  k.take("budget_bytes", b.bytes);
  k.take("budget_high", b.high);
  k.take("budget_low", b.low);
}

faultline::RegionOptions region_options(const std::string& function, Keywords& k) {
  faultline::RegionOptions o;
  k.take("offset", o.offset);
  k.take("length", o.length);
  k.take("fill_size", o.fill_size);
  k.take("readahead", o.readahead);
  k.take("readahead_max", o.readahead_max);
  k.take("writable", o.writable);
  k.take("track_dirty", o.track_dirty);
  k.take("write_back", o.write_back);
  k.take("record_touches", o.record_touches);
  k.take("reload_removed", o.reload_removed);
  take_budget(k, o.budget);
  std::string eviction = "adaptive";
  k.take("eviction", eviction);
  if (eviction == "adaptive") o.eviction = faultline::EvictionPolicy::kAdaptive;
  else if (eviction == "fifo") o.eviction = faultline::EvictionPolicy::kFifo;
  else throw py::value_error(function + ": eviction must be 'adaptive' or 'fifo', not '" + eviction + "'");
  k.reject_rest();
  return o;
}

py::dict stats_dict(const faultline::StatsSnapshot& s) {
  py::dict d;
  s.for_each([&](std::string_view name, uint64_t value) { d[py::str(name.data(), name.size())] = value; });
  return d;
}

// A faultline::Region and what Python needs around it: the number of buffer
// views alive (close() refuses while there are any) and a lock that keeps
// close() from unmapping under a call running without the GIL.
class PyRegion {
 public:
  explicit PyRegion(faultline::Region region) : region_(std::move(region)), open_(true) {}

  size_t size() const { return closing_ ? 0 : region_.size(); }
  bool closed() const { return closing_; }

  // Runs f(region) without the GIL, with the region guaranteed open.
  template <typename F>
  auto call(F&& f) {
    check_open();
    py::gil_scoped_release nogil;
    std::shared_lock lock(mu_);
    if (!open_) throw py::value_error("faultline.Region: the region is closed");
    return f(region_);
  }

  void close() {
    if (closing_) return;
    if (exports_ > 0)
      throw py::buffer_error("faultline.Region.close(): " + std::to_string(exports_) +
                             " buffer view(s) of the region still exist (numpy arrays, memoryviews); "
                             "delete or release them first");
    closing_ = true;  // under the GIL: no new view, no new call from here on
    try {
      py::gil_scoped_release nogil;
      std::unique_lock lock(mu_);
      region_.close();  // a failed write-back flush leaves the region open and intact
      open_ = false;
    } catch (...) {
      closing_ = false;
      throw;
    }
  }

  static int get_buffer(PyObject* self, Py_buffer* view, int flags) {
    PyRegion* r;
    try {
      r = py::cast<PyRegion*>(py::handle(self));
    } catch (const std::exception&) {
      PyErr_SetString(PyExc_TypeError, "faultline.Region: not a Region");
      view->obj = nullptr;
      return -1;
    }
    if (r->closing_) {
      PyErr_SetString(PyExc_BufferError, "faultline.Region: the region is closed");
      view->obj = nullptr;
      return -1;
    }
    // Read-only unless mapped writable; fails with BufferError if a
    // writable view of a read-only region is asked for. Sets view->obj
    // (a new reference): the Region object outlives the view.
    const int readonly = r->region_.options().writable ? 0 : 1;
    if (PyBuffer_FillInfo(view, self, r->region_.data(), static_cast<Py_ssize_t>(r->region_.size()), readonly,
                          flags) != 0)
      return -1;
    ++r->exports_;
    return 0;
  }

  static void release_buffer(PyObject* self, Py_buffer*) { --py::cast<PyRegion*>(py::handle(self))->exports_; }

 private:
  void check_open() const {
    if (closing_) throw py::value_error("faultline.Region: the region is closed");
  }

  faultline::Region region_;
  std::shared_mutex mu_;
  bool open_;             // under mu_: region_ is mapped
  bool closing_ = false;  // under the GIL: close() has started or finished
  int exports_ = 0;       // under the GIL: buffer views alive
};

faultline::RuntimeOptions runtime_options(Keywords& k) {
  faultline::RuntimeOptions o;
  k.take("staging_bytes", o.staging_bytes);
  k.take("read_retries", o.read_retries);
  take_budget(k, o.budget);
  k.take("stats_file", o.stats_file);
  double interval = -1;
  k.take("stats_interval", interval);  // seconds, as Python counts time
  if (interval >= 0) o.stats_interval = std::chrono::milliseconds(static_cast<int64_t>(interval * 1000 + 0.5));
  k.reject_rest();
  return o;
}

// Maps the backend `open()` returns, both without the GIL (opening can read
// a file's index or wait for a server).
template <typename Open>
std::unique_ptr<PyRegion> map_with(faultline::Runtime& runtime, const faultline::RegionOptions& options, Open open) {
  py::gil_scoped_release nogil;
  return std::make_unique<PyRegion>(runtime.map(open(), options));
}

}  // namespace

PYBIND11_MODULE(faultline, m) {
  m.doc() = "faultline: memory regions filled on first touch from files, snapshots and page servers";
  m.attr("__version__") = faultline::version();

  static py::exception<faultline::Error> error(m, "Error", PyExc_Exception);
  error.doc() = "A faultline failure; str() is the library's message, errno the errno behind it (0: none)";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const faultline::Error& e) {
      py::object exc = py::reinterpret_borrow<py::object>(error.ptr())(e.what());
      exc.attr("errno") = e.sys_errno();
      PyErr_SetObject(error.ptr(), exc.ptr());
    }
  });

  py::class_<PyRegion> region(m, "Region", py::buffer_protocol(),
                              "Memory filled on first touch. Supports the buffer protocol "
                              "(numpy.frombuffer, memoryview), read-only unless mapped writable.");
  auto* type = reinterpret_cast<PyTypeObject*>(region.ptr());
  type->tp_as_buffer->bf_getbuffer = &PyRegion::get_buffer;
  type->tp_as_buffer->bf_releasebuffer = &PyRegion::release_buffer;
  PyType_Modified(type);

  region.def("__len__", &PyRegion::size)
      .def_property_readonly("closed", &PyRegion::closed)
      .def(
          "prefetch",
          [](PyRegion& r, uint64_t offset, uint64_t length) {
            r.call([&](faultline::Region& reg) { reg.prefetch(offset, length); });
          },
          py::arg("offset"), py::arg("length"))
      .def(
          "prefetch_chunks",
          [](PyRegion& r, std::vector<uint64_t> offsets) {
            r.call([&](faultline::Region& reg) { reg.prefetch_chunks(offsets); });
          },
          py::arg("offsets"))
      .def("drain", [](PyRegion& r) { r.call([](faultline::Region& reg) { reg.drain(); }); })
      .def("flush", [](PyRegion& r) { r.call([](faultline::Region& reg) { reg.flush(); }); })
      .def(
          "take_dirty",
          [](PyRegion& r) {
            auto runs = r.call([](faultline::Region& reg) { return reg.take_dirty(); });
            py::list out;
            for (const faultline::DirtyRange& d : runs) out.append(py::make_tuple(d.offset, d.length));
            return out;
          },
          "The pages written since the previous call (or since the map), as a list of (offset, length) "
          "tuples in region bytes, in order. Needs track_dirty=True.")
      .def("touched_chunks",
           [](PyRegion& r) { return r.call([](faultline::Region& reg) { return reg.touched_chunks(); }); })
      .def("stats",
           [](PyRegion& r) { return stats_dict(r.call([](faultline::Region& reg) { return reg.stats(); })); })
      .def("close", &PyRegion::close)
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](PyRegion& r, py::args) { r.close(); });

  py::class_<faultline::Runtime>(m, "Runtime", "Serves page faults for the regions mapped through it")
      .def(py::init([](py::kwargs kwargs) {
        Keywords k("faultline.Runtime()", std::move(kwargs));
        auto options = runtime_options(k);
        py::gil_scoped_release nogil;
        return std::make_unique<faultline::Runtime>(options);
      }))
      .def(
          "map_file",
          [](faultline::Runtime& rt, const std::string& path, py::kwargs kwargs) {
            Keywords k("Runtime.map_file()", std::move(kwargs));
            auto options = region_options("Runtime.map_file()", k);
            faultline::FileBackendOptions file;
            file.writable = options.write_back;  // write-back needs a backend opened read-write
            return map_with(rt, options, [&] { return std::make_shared<faultline::FileBackend>(path, file); });
          },
          py::arg("path"))
      .def(
          "map_snapshot",
          [](faultline::Runtime& rt, const std::string& path, py::kwargs kwargs) {
            Keywords k("Runtime.map_snapshot()", std::move(kwargs));
            auto options = region_options("Runtime.map_snapshot()", k);
            return map_with(rt, options, [&] { return faultline::open_zstd_snapshot(path); });
          },
          py::arg("path"))
      .def(
          "connect",
          [](faultline::Runtime& rt, const std::string& address, std::optional<std::string> secret,
             py::kwargs kwargs) {
            Keywords k("Runtime.connect()", std::move(kwargs));
            auto options = region_options("Runtime.connect()", k);
            faultline::RemoteOptions remote;
            remote.address = address;
            remote.secret = secret.value_or("");
            return map_with(rt, options, [&] { return faultline::connect_remote(remote); });
          },
          py::arg("address"), py::arg("secret") = py::none())
      .def("stats", [](const faultline::Runtime& rt) { return stats_dict(rt.stats()); })
      .def_property_readonly("mode", [](const faultline::Runtime& rt) { return rt.mode().describe(); });

  m.def(
      "write_snapshot",
      [](const std::string& input_path, const std::string& output_path, uint32_t chunk_size, int level) {
        faultline::SnapshotWriteOptions options;
        options.chunk_size = chunk_size;
        options.level = level;
        py::gil_scoped_release nogil;
        faultline::write_snapshot_from_file(input_path, output_path, options);
      },
      py::arg("input_path"), py::arg("output_path"), py::arg("chunk_size") = 64 * 1024, py::arg("level") = 3,
      "Writes the file at input_path as a zstd snapshot at output_path (faultline/snapshot.h)");
}
