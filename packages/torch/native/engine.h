// What engine.cc shares with the addon's other translation units (dist.cc): the tensor handle table and the guard
// that turns C++ exceptions into JS exceptions. Everything else in engine.cc stays private to it.
#pragma once

#include <node_api.h>

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <string>

namespace retain {

// The live tensor behind a JS handle; throws (as a JS Error through guarded()) when the handle is not live.
at::Tensor& tensorAt(int32_t handle);
// Puts a tensor in the table and returns its new handle.
int32_t adoptTensor(at::Tensor t);
// Runs f and converts any escaping exception (c10::Error, std::exception, ...) into a pending JS exception.
napi_value guarded(napi_env env, const char* ctx, const std::function<napi_value()>& f);

// Adds the distributed (c10d) functions to the addon's exports; defined in dist.cc.
void registerDistributed(napi_env env, napi_value exports);

}  // namespace retain
