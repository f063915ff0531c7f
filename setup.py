#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""pip install --no-build-isolation . : the Python module `faultline`.

The module is built by the project's CMake (python/CMakeLists.txt), which
holds the source lists; this file only drives it: configure with the tests,
tools, samples and benchmark off, build the faultline-python target, and
hand the module to setuptools. Everything comes from the system (Debian:
cmake, g++, pybind11-dev, python3-dev, liburing-dev, libzstd-dev,
libboost-dev, libssl-dev, nlohmann-json3-dev); nothing is downloaded, hence
--no-build-isolation. See docs/python.md.

Environment: CMAKE_BUILD_PARALLEL_LEVEL (build jobs), and any variable CMake
reads (CMAKE_CXX_COMPILER_LAUNCHER=ccache, CXX).
"""
import glob
import os
import re
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


def project_version():
    """The version, from project(VERSION) in CMakeLists.txt (its one home)."""
    with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
        m = re.search(r"project\(faultline VERSION ([0-9.]+)", f.read())
    if not m:
        sys.exit("setup.py: no project(faultline VERSION ...) in CMakeLists.txt")
    return m.group(1)


class CMakeModule(Extension):
    """The faultline-python target of the CMake build."""

    def __init__(self):
        super().__init__("faultline", sources=[])


class BuildWithCMake(build_ext):
    def build_extension(self, ext):
        if shutil.which("cmake") is None:
            sys.exit("setup.py: cmake is needed to build faultline (Debian: cmake)")
        tree = os.path.abspath(os.path.join(self.build_temp, "cmake"))
        configure = [
            "cmake", "-S", ROOT, "-B", tree,
            "-DCMAKE_BUILD_TYPE=Release",
            "-DPython3_EXECUTABLE=" + sys.executable,
            "-DFAULTLINE_BUILD_PYTHON=ON",
            "-DFAULTLINE_BUILD_TESTS=OFF",
            "-DFAULTLINE_BUILD_TOOLS=OFF",
            "-DFAULTLINE_BUILD_SAMPLES=OFF",
            "-DFAULTLINE_BUILD_BENCH=OFF",
        ]
        subprocess.run(configure, check=True)
        subprocess.run(["cmake", "--build", tree, "--target", "faultline-python"], check=True)
        built = glob.glob(os.path.join(tree, "python", "faultline*.so"))
        if len(built) != 1:
            sys.exit("setup.py: expected one faultline*.so in %s/python, found %s" % (tree, built))
        target = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(built[0], target)


# Not build/ (where the CMake builds of a checkout usually live) and not the
# top of the tree: everything setuptools writes goes under build-python/.
BUILD_BASE = "build-python"
os.makedirs(os.path.join(ROOT, BUILD_BASE), exist_ok=True)

setup(
    name="faultline",
    version=project_version(),
    description="Memory regions filled on first touch from files, snapshots and page servers (userfaultfd)",
    license="Apache-2.0",
    python_requires=">=3.9",
    ext_modules=[CMakeModule()],
    cmdclass={"build_ext": BuildWithCMake},
    options={"build": {"build_base": BUILD_BASE}, "egg_info": {"egg_base": BUILD_BASE}},
    zip_safe=False,
)
