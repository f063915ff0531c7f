# SPDX-License-Identifier: Apache-2.0
# How the library is built: faultline_library(CORE <sources> REMOTE <sources>
# SNAPSHOT <sources>), called once by the top-level CMakeLists.txt, which
# holds the source lists.
#
# The library has three parts, so that a program that uses only some of it
# links (and, statically, needs the development files of) only their
# dependencies:
#
#   part      library               links                    public headers
#   core      libfaultline-core     liburing, threads        runtime/include, backends/include
#   snapshot  libfaultline-snapshot core, libzstd, liburing, libcrypto  (same directories)
#   remote    libfaultline-remote   core, libssl, libcrypto  (same directories)
#
# Boost (Asio and Beast, header-only) is used to compile the remote part and appears
# in no public header (pimpl), so nothing that uses faultline ever needs it.
#
# Each part is compiled once, as position-independent objects, and linked
# twice: a shared library libfaultline-PART.so.<SOVERSION> and a static
# libfaultline-PART.a. Targets:
#
#   in this build                  installed (find_package(faultline))
#   faultline::faultline           faultline::faultline_static   all parts, static
#   faultline_shared               faultline::faultline          all parts, shared
#   faultline_PART_static          faultline::PART_static
#   faultline_PART_shared          faultline::PART
#
# In-tree users (tests, tools, bench, samples, fuzzers) link
# faultline::faultline, the static libraries: they also use private headers
# and internal symbols, and the installed tools then need no libfaultline.so.

# ABI version. The version itself is set once, in project(VERSION). Before
# 1.0 every minor release may break the ABI, so the SONAME carries
# MAJOR.MINOR (libfaultline-core.so.0.2); from 1.0 on, MAJOR alone.
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(FAULTLINE_SOVERSION "${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR}")
else()
  set(FAULTLINE_SOVERSION "${PROJECT_VERSION_MAJOR}")
endif()

# _faultline_part(PART SOURCES <files> [DEPENDS <parts>] [LINK <libraries>]
#                 [COMPILE_ONLY <targets>])
# LINK: libraries the part's code calls (private to the shared library;
# link-only requirements of the static one). COMPILE_ONLY: header-only
# dependencies, never exported.
function(_faultline_part part)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "" "SOURCES;DEPENDS;LINK;COMPILE_ONLY")
  if(NOT arg_SOURCES)
    message(FATAL_ERROR "faultline_library: the ${part} part has no sources")
  endif()
  set(objects faultline_${part}_objects)
  add_library(${objects} OBJECT ${arg_SOURCES})
  set_target_properties(${objects} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  target_compile_features(${objects} PUBLIC cxx_std_20)
  target_include_directories(${objects} PRIVATE
    ${PROJECT_SOURCE_DIR}/runtime/include
    ${PROJECT_SOURCE_DIR}/backends/include
    ${PROJECT_BINARY_DIR}/include
    ${PROJECT_SOURCE_DIR}/runtime
    ${PROJECT_SOURCE_DIR}/backends)
  target_link_libraries(${objects} PRIVATE Threads::Threads ${arg_LINK} ${arg_COMPILE_ONLY})

  foreach(kind static shared)
    set(lib faultline_${part}_${kind})
    string(TOUPPER ${kind} type)
    add_library(${lib} ${type} $<TARGET_OBJECTS:${objects}>)
    set_target_properties(${lib} PROPERTIES OUTPUT_NAME faultline-${part})
    target_include_directories(${lib} PUBLIC
      $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/runtime/include>
      $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/backends/include>
      $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/include>
      $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
    # The headers use std::span and other C++20 library types.
    target_compile_features(${lib} PUBLIC cxx_std_20)
    list(TRANSFORM arg_DEPENDS PREPEND faultline_ OUTPUT_VARIABLE depends)
    list(TRANSFORM depends APPEND _${kind})
    target_link_libraries(${lib} PUBLIC Threads::Threads ${depends} PRIVATE ${arg_LINK})
  endforeach()

  set_target_properties(faultline_${part}_static PROPERTIES EXPORT_NAME ${part}_static)
  set_target_properties(faultline_${part}_shared PROPERTIES EXPORT_NAME ${part}
    VERSION ${PROJECT_VERSION} SOVERSION ${FAULTLINE_SOVERSION})
  if(NOT FAULTLINE_SANITIZE AND NOT FAULTLINE_BUILD_FUZZERS)
    # Every symbol resolved at link time: a source listed in the wrong part
    # fails here, not in a user's program. (Sanitizer runtimes are linked
    # into the executable, so sanitized builds leave their symbols open.)
    target_link_options(faultline_${part}_shared PRIVATE LINKER:--no-undefined)
  endif()
endfunction()

function(faultline_library)
  cmake_parse_arguments(PARSE_ARGV 0 arg "" "" "CORE;REMOTE;SNAPSHOT")
  _faultline_part(core SOURCES ${arg_CORE}
    LINK PkgConfig::LIBURING COMPILE_ONLY nlohmann_json::nlohmann_json)
  _faultline_part(snapshot SOURCES ${arg_SNAPSHOT} DEPENDS core
    LINK PkgConfig::LIBZSTD PkgConfig::LIBURING OpenSSL::Crypto)
  _faultline_part(remote SOURCES ${arg_REMOTE} DEPENDS core
    LINK OpenSSL::SSL OpenSSL::Crypto COMPILE_ONLY Boost::headers)

  # All parts at once (what faultline/faultline.h declares).
  foreach(kind static shared)
    add_library(faultline_${kind} INTERFACE)
    target_link_libraries(faultline_${kind} INTERFACE
      faultline_snapshot_${kind} faultline_remote_${kind} faultline_core_${kind})
  endforeach()
  set_target_properties(faultline_static PROPERTIES EXPORT_NAME faultline_static)
  set_target_properties(faultline_shared PROPERTIES EXPORT_NAME faultline)
  add_library(faultline::faultline ALIAS faultline_static)
endfunction()
