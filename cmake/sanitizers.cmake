# Sanitizer and fuzzing builds. Included by the top-level CMakeLists.txt before any target, so the
# flags reach every library and executable of the build.
#
#  R1_SANITIZE  a list of sanitizers, e.g. "address;undefined": -fsanitize=… and
#               -fno-omit-frame-pointer on the compile and link flags of every C/C++ target
#               (CUDA sources are left alone). scripts/sanitize.sh builds build-asan this way.
#  R1_FUZZ      the libFuzzer build (clang only; scripts/fuzz.sh builds build-fuzz): only the
#               parsing libraries and the fuzz targets of tests/fuzz, instrumented for coverage
#               (-fsanitize=fuzzer-no-link) and with AddressSanitizer + UndefinedBehaviorSanitizer,
#               any UB report being fatal so that the fuzzer counts it as a crash.
set(R1_SANITIZE "" CACHE STRING "Sanitizers for every target, e.g. address;undefined")
option(R1_FUZZ "Build only the libFuzzer targets of tests/fuzz and what they link (clang)" OFF)

if(R1_SANITIZE AND NOT R1_CUDA STREQUAL "off")
  message(FATAL_ERROR "R1_SANITIZE instruments host code only: configure with -DR1_CUDA=off")
endif()
if(R1_FUZZ)
  set(R1_CUDA off)  # the fuzz build has no kernels
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "R1_FUZZ needs clang's libFuzzer: configure with CC=clang CXX=clang++ "
                        "(Debian: apt-get install clang libclang-rt-dev)")
  endif()
  if(NOT R1_SANITIZE)
    set(R1_SANITIZE address undefined)
  endif()
  add_compile_options($<$<COMPILE_LANGUAGE:C,CXX>:-fsanitize=fuzzer-no-link>
                      $<$<COMPILE_LANGUAGE:C,CXX>:-fno-sanitize-recover=all>)
  # GCC is the project's compiler and the normal build (which also compiles every fuzz target)
  # keeps warnings as errors; clang's own diagnostics are shown here but do not stop the build.
  list(REMOVE_ITEM R1_WARNINGS -Werror)
endif()

if(R1_SANITIZE)
  list(JOIN R1_SANITIZE "," r1_sanitizer_list)
  # (Inside a generator expression the list's commas must be spelled $<COMMA>.)
  list(JOIN R1_SANITIZE "$<COMMA>" r1_sanitizer_genex)
  add_compile_options($<$<COMPILE_LANGUAGE:C,CXX>:-fsanitize=${r1_sanitizer_genex}>
                      $<$<COMPILE_LANGUAGE:C,CXX>:-fno-omit-frame-pointer>)
  add_link_options(-fsanitize=${r1_sanitizer_list} -fno-omit-frame-pointer)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # The instrumentation confuses GCC's flow analysis: -Wmaybe-uninitialized reports false
    # positives (in Boost.Beast's parser) that the normal build does not see. Here they stay
    # warnings; the normal build keeps them errors.
    add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-Wno-error=maybe-uninitialized>)
  endif()
  message(STATUS "r1serve: sanitizers ${r1_sanitizer_list}")
endif()
