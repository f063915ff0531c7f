# SPDX-License-Identifier: Apache-2.0
# `cmake --install BUILD [--prefix P]` installs:
#   lib/libfaultline-{core,snapshot,remote}.so.<VERSION> (+ SONAME and dev links) and .a
#   include/faultline/*.h                 the public headers (faultline/faultline.h: all)
#   lib/cmake/faultline/                  find_package(faultline [COMPONENTS ...])
#   lib/pkgconfig/faultline{,-core,-snapshot,-remote}.pc
#   bin/faultline, bin/faultline-bench    (when built)
# Parts, targets and components: cmake/FaultlineLibrary.cmake, docs/packaging.md.
include(CMakePackageConfigHelpers)

set(FAULTLINE_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/faultline)

install(TARGETS faultline_core_shared faultline_snapshot_shared faultline_remote_shared faultline_shared
  EXPORT faultlineTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS faultline_core_static faultline_snapshot_static faultline_remote_static faultline_static
  EXPORT faultlineStaticTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY runtime/include/faultline backends/include/faultline
  ${PROJECT_BINARY_DIR}/include/faultline
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT faultlineTargets NAMESPACE faultline:: FILE faultline-targets.cmake
  DESTINATION ${FAULTLINE_CMAKE_DIR})
install(EXPORT faultlineStaticTargets NAMESPACE faultline:: FILE faultline-static-targets.cmake
  DESTINATION ${FAULTLINE_CMAKE_DIR})
configure_package_config_file(cmake/faultlineConfig.cmake.in
  ${PROJECT_BINARY_DIR}/faultlineConfig.cmake
  INSTALL_DESTINATION ${FAULTLINE_CMAKE_DIR})
# 0.x: a minor release may break the ABI (see FAULTLINE_SOVERSION), so a
# request for 0.2 accepts 0.2.x only.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/faultlineConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/faultlineConfig.cmake ${PROJECT_BINARY_DIR}/faultlineConfigVersion.cmake
  DESTINATION ${FAULTLINE_CMAKE_DIR})

# pkg-config: one file per part and faultline.pc for all of them. The
# prefix is found from the file's own place (${pcfiledir}), so the files
# stay right wherever --prefix puts them.
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}" OR IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(FAULTLINE_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
  set(FAULTLINE_PC_LIBDIR "${CMAKE_INSTALL_FULL_LIBDIR}")
  set(FAULTLINE_PC_INCLUDEDIR "${CMAKE_INSTALL_FULL_INCLUDEDIR}")
else()
  file(RELATIVE_PATH _up "/prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/prefix")
  string(REGEX REPLACE "/$" "" _up "${_up}")
  set(FAULTLINE_PC_PREFIX "\${pcfiledir}/${_up}")
  set(FAULTLINE_PC_LIBDIR "\${prefix}/${CMAKE_INSTALL_LIBDIR}")
  set(FAULTLINE_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
# faultline_pc(NAME DESCRIPTION REQUIRES REQUIRES_PRIVATE LIBS)
# REQUIRES_PRIVATE: the part's own link dependencies, which only a static
# link needs (`pkg-config --static`). pkg-config still reads their .pc files
# for --cflags, so a pkg-config user has their -dev packages installed.
function(faultline_pc name description requires requires_private libs)
  set(PC_NAME ${name})
  set(PC_DESCRIPTION ${description})
  set(PC_REQUIRES ${requires})
  set(PC_REQUIRES_PRIVATE ${requires_private})
  set(PC_LIBS ${libs})
  configure_file(${PROJECT_SOURCE_DIR}/cmake/faultline.pc.in ${PROJECT_BINARY_DIR}/pkgconfig/${name}.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/pkgconfig/${name}.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endfunction()
faultline_pc(faultline-core "faultline core: userfaultfd runtime, file and memory backends"
  "" "liburing" "-L\${libdir} -lfaultline-core")
faultline_pc(faultline-snapshot "faultline compressed snapshots (zstd)"
  "faultline-core = ${PROJECT_VERSION}" "libzstd liburing libcrypto" "-L\${libdir} -lfaultline-snapshot")
faultline_pc(faultline-remote "faultline page server and remote backend"
  "faultline-core = ${PROJECT_VERSION}" "libssl libcrypto" "-L\${libdir} -lfaultline-remote")
faultline_pc(faultline "faultline: user-space paging with userfaultfd (all parts)"
  "faultline-snapshot = ${PROJECT_VERSION}, faultline-remote = ${PROJECT_VERSION}, faultline-core = ${PROJECT_VERSION}"
  "" "")

# The programs: the tool installs itself (tools/CMakeLists.txt); so does the
# benchmark, which has a man page too.
if(TARGET faultline-bench)
  install(TARGETS faultline-bench RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
