# Runs `ds-config check` on each row of tests/data/real_config_triples.json (real projects'
# configs, the host's "auto" values, a world size) and compares the batch triple with the one
# DeepSpeed computed for the same inputs (scripts/reference/batch_triples.py). A row where DeepSpeed
# refused the config must make ds-config fail too.
#   cmake -DDS_CONFIG=<ds-config> -DTRIPLES=<json> -DSOURCE_DIR=<repo> -P check_real_triples.cmake
cmake_minimum_required(VERSION 3.20)

if(NOT EXISTS "${DS_CONFIG}")
  message(FATAL_ERROR "ds-config not found at ${DS_CONFIG}")
endif()
file(READ "${TRIPLES}" doc)
string(JSON n_rows LENGTH "${doc}" rows)
math(EXPR last "${n_rows} - 1")
set(failures 0)
set(keys train_batch_size train_micro_batch_size_per_gpu gradient_accumulation_steps)

foreach(i RANGE ${last})
  string(JSON config GET "${doc}" rows ${i} config)
  string(JSON world GET "${doc}" rows ${i} world_size)
  set(args check "${SOURCE_DIR}/${config}" --world-size ${world})
  string(JSON n_auto LENGTH "${doc}" rows ${i} auto)
  if(n_auto GREATER 0)
    math(EXPR last_auto "${n_auto} - 1")
    foreach(j RANGE ${last_auto})
      string(JSON key MEMBER "${doc}" rows ${i} auto ${j})
      string(JSON value GET "${doc}" rows ${i} auto ${key})
      list(APPEND args --auto "${key}=${value}")
    endforeach()
  endif()
  execute_process(COMMAND "${DS_CONFIG}" ${args}
    OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
  string(REGEX MATCH "train_batch_size=[0-9]+ train_micro_batch_size_per_gpu=[0-9]+ gradient_accumulation_steps=[0-9]+"
         ours "${out}")
  if(NOT rc EQUAL 0)
    string(REGEX REPLACE "\n.*" "" first_err "${err}")
    set(ours "error: ${first_err}")
  endif()

  string(JSON ds_error ERROR_VARIABLE no_error GET "${doc}" rows ${i} deepspeed error)
  if(no_error)  # DeepSpeed resolved a triple
    set(expected "")
    foreach(k ${keys})
      string(JSON v GET "${doc}" rows ${i} deepspeed ${k})
      list(APPEND expected "${k}=${v}")
    endforeach()
    list(JOIN expected " " expected)
    set(ok FALSE)
    if(rc EQUAL 0 AND ours STREQUAL expected)
      set(ok TRUE)
    endif()
  else()
    set(expected "error: ${ds_error}")
    set(ok FALSE)
    if(NOT rc EQUAL 0 AND NOT err STREQUAL "")  # refused, with a message
      set(ok TRUE)
    endif()
  endif()

  get_filename_component(name "${config}" NAME)
  if(ok)
    message(STATUS "ok   ${name} world ${world}\n       DeepSpeed: ${expected}\n       dspp:      ${ours}")
  else()
    math(EXPR failures "${failures} + 1")
    message(STATUS "FAIL ${name} world ${world}\n       DeepSpeed: ${expected}\n       dspp:      ${ours}\n       command: ${DS_CONFIG} ${args}\n       stdout: ${out}\n       stderr: ${err}")
  endif()
endforeach()

if(failures GREATER 0)
  message(FATAL_ERROR "${failures} of ${n_rows} rows differ from DeepSpeed")
endif()
message(STATUS "all ${n_rows} rows resolve as DeepSpeed does")
