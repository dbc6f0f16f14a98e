// Stand-in for a header that Debian's libtorch-dev leaves out (torch/csrc/distributed/autograd/ is not shipped) but
// that c10d/reducer.hpp includes on non-Windows builds. reducer.hpp needs only two names from it: the callback type
// it static_asserts against, and the shared-pointer type whose size fixes the Reducer's layout (RpcContext). Both are
// declared here exactly as libtorch 1.13 declares them; nothing in this addon creates or calls a DistAutogradContext
// (the compiled Reducer inside libtorch_cpu uses the real one, which stays null without RPC).
//
// build.mjs adds this folder to the include path last, and only when the real header is missing, so a full PyTorch
// install always wins.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>

namespace torch {
namespace distributed {
namespace autograd {

class DistAutogradContext {
 public:
  using GradCallback = std::function<bool(at::Tensor&)>;
};

using ContextPtr = std::shared_ptr<DistAutogradContext>;

}  // namespace autograd
}  // namespace distributed
}  // namespace torch
