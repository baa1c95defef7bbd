# dspp_add_optimizer_cpu_plugin(<target> NAME <name> SOURCES <src>...)
#
# One CPU optimizer plugin built on common/flat_optimizer.h: the SDK, RapidJSON (headers only, for
# param-group overrides) and OpenMP when the compiler has it. -fno-math-errno lets the compiler
# vectorise sqrt and -fno-trapping-math lets it if-convert Lion's sign(); neither changes a result
# (only errno and floating-point exception flags, which nothing reads). -ffp-contract=off keeps
# every a * b + c two roundings on targets with fused multiply-add (aarch64, or x86-64 with FMA
# enabled; GCC contracts by default there), so results are the same on every target and equal the
# device kernels' (DeviceKernels' optimizer steps never contract). No -march: the library runs on
# any CPU of the target architecture.
# Included by each plugin folder: find_package's imported targets are scoped to the directory.
find_package(OpenMP COMPONENTS CXX)

function(dspp_add_optimizer_cpu_plugin target)
  cmake_parse_arguments(O "" "NAME" "SOURCES" ${ARGN})
  set(libs dspp_rapidjson)
  if(OpenMP_CXX_FOUND)
    list(APPEND libs OpenMP::OpenMP_CXX)
  endif()
  dspp_add_plugin(${target} KIND optimizer NAME ${O_NAME} SOURCES ${O_SOURCES} LIBS ${libs})
  target_compile_options(${target} PRIVATE -fno-math-errno -fno-trapping-math -ffp-contract=off)
  if(NOT OpenMP_CXX_FOUND)
    target_compile_options(${target} PRIVATE -Wno-unknown-pragmas)
  endif()
endfunction()
