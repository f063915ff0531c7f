# SPDX-License-Identifier: Apache-2.0
# faultline_find_python3(VAR "module, module"): sets the cache entry VAR to
# the first python3 on PATH that can import the modules (unless the user set
# VAR), else to VAR-NOTFOUND. A pyenv shim that comes first on PATH without
# them is passed over: that is why find_program alone is not enough.

function(faultline_python_imports result candidate)
  execute_process(COMMAND ${candidate} -c "import ${faultline_python_wanted}"
                  RESULT_VARIABLE rc OUTPUT_QUIET ERROR_QUIET)
  if(NOT rc EQUAL 0)
    set(${result} FALSE PARENT_SCOPE)
  endif()
endfunction()

function(faultline_find_python3 var modules)
  set(faultline_python_wanted "${modules}")  # read by faultline_python_imports
  if(CMAKE_VERSION VERSION_GREATER_EQUAL 3.25)  # VALIDATOR: 3.25
    find_program(${var} NAMES python3 VALIDATOR faultline_python_imports)
    return()
  endif()
  find_program(${var} NAMES python3)
  if(${var})
    set(ok TRUE)
    faultline_python_imports(ok ${${var}})
    if(NOT ok)
      set(${var} ${var}-NOTFOUND CACHE FILEPATH "python3 that imports ${modules}" FORCE)
    endif()
  endif()
endfunction()
