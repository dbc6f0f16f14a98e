// Data-parallel communication over PyTorch's own c10d: a TCPStore rendezvous and one default process group (Gloo on
// CPU; NCCL when the build found its headers and libtorch has CUDA). JS sees a small API: init, allreduce returning a
// work id, wait, broadcast, allgather, barrier, destroy.
//
// Built only when RETAIN_C10D is defined (build.mjs defines it when the c10d Gloo headers, gloo's own headers and the
// exported symbols are all there). Without it every function throws one clear error, so the rest of the addon still
// builds against a libtorch that lacks c10d.
//
// Gradient all-reduce overlapped with backward uses DDP's own engine, c10d::Reducer (compiled in with
// RETAIN_C10D_REDUCER): it puts a post-hook on every parameter's AccumulateGrad node, copies each gradient into its
// flat bucket as soon as backward has produced it, launches a bucket's all-reduce the moment its last gradient is in,
// and at the end of backward (an autograd-engine final callback) waits for all buckets and writes the sums back into
// .grad. JS only says, before the backward that should reduce, which outputs it starts from (prepare_for_backward);
// nothing calls into JS during backward.
//
// Nothing may wait forever: the store and the Gloo context get the caller's timeout, and wait() passes a deadline to
// Work::wait. A peer that dies closes its sockets, so the collectives of the survivors fail at once rather than at the
// deadline; the deadline covers a peer that hangs.
#include "engine.h"

#include <chrono>
#include <cstdlib>
#include <algorithm>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#ifdef RETAIN_C10D
#include <torch/version.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef RETAIN_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#ifdef RETAIN_C10D_REDUCER
#include <torch/csrc/distributed/c10d/logger.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>
#endif
#endif

namespace {

using retain::guarded;

// --- small N-API helpers (engine.cc's are private to it)

struct DistArgs {
  static constexpr size_t kMax = 8;
  size_t argc = kMax;
  napi_value argv[kMax];
  DistArgs(napi_env env, napi_callback_info info) {
    if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok) throw std::runtime_error("bad call");
  }
  napi_value at(size_t i, const char* fn) const {
    if (i >= argc) throw std::invalid_argument(std::string(fn) + ": missing argument " + std::to_string(i + 1));
    return argv[i];
  }
};

double number(napi_env env, napi_value v, const char* what) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) throw std::invalid_argument(std::string(what) + " must be a number");
  return d;
}

std::string text(napi_env env, napi_value v, const char* what) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, nullptr, 0, &len) != napi_ok) throw std::invalid_argument(std::string(what) + " must be a string");
  std::string s(len, '\0');
  napi_get_value_string_utf8(env, v, s.data(), len + 1, &len);
  return s;
}

std::vector<at::Tensor> tensorList(napi_env env, napi_value v, const char* what) {
  bool isArr = false;
  napi_is_array(env, v, &isArr);
  if (!isArr) throw std::invalid_argument(std::string(what) + " must be an array of tensors");
  uint32_t n = 0;
  napi_get_array_length(env, v, &n);
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    napi_value e;
    napi_get_element(env, v, i, &e);
    int32_t h;
    if (napi_get_value_int32(env, e, &h) != napi_ok) throw std::invalid_argument(std::string(what) + " must be an array of tensors");
    out.push_back(retain::tensorAt(h));
  }
  return out;
}

napi_value undef(napi_env env) {
  napi_value r;
  napi_get_undefined(env, &r);
  return r;
}

napi_value integer(napi_env env, int64_t v) {
  napi_value r;
  napi_create_double(env, static_cast<double>(v), &r);
  return r;
}

napi_value flag(napi_env env, bool b) {
  napi_value r;
  napi_get_boolean(env, b, &r);
  return r;
}

#ifdef RETAIN_C10D

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  int rank = 0;
  int world = 1;
  std::string backend;
  std::chrono::milliseconds timeout{0};
};

// A raw pointer on purpose: a static owner would run ProcessGroupGloo's destructor during exit(), which joins worker
// threads that may be blocked on a dead peer. destroy() frees it; a process that exits without it just leaves.
Group* g_group = nullptr;

struct Pending {
  c10::intrusive_ptr<c10d::Work> work;
  std::vector<at::Tensor> tensors;
  double divisor = 1;  // Gloo has no AVG reduction: sum, then divide once the work is done
};
std::unordered_map<int64_t, Pending> g_pending;
int64_t g_nextWork = 1;

Group& group(const char* fn) {
  if (!g_group) throw std::runtime_error(std::string(fn) + ": the process group is not initialised (call init first)");
  return *g_group;
}

void checkTensors(const std::vector<at::Tensor>& ts, const Group& gr, const char* fn) {
  if (ts.empty()) throw std::invalid_argument(std::string(fn) + ": no tensors given");
  for (const auto& t : ts) {
    if (!t.is_contiguous()) throw std::invalid_argument(std::string(fn) + ": tensors must be contiguous (call contiguous() first)");
    if (gr.backend == "gloo" && !t.device().is_cpu())
      throw std::invalid_argument(std::string(fn) + ": the Gloo backend takes CPU tensors, got one on " + t.device().str());
    if (t.requires_grad() && t.is_leaf())
      throw std::invalid_argument(std::string(fn) + ": a leaf tensor that requires grad cannot be written in place; pass its detached data");
  }
}

void waitFor(const c10::intrusive_ptr<c10d::Work>& w, const Group& gr) {
  // Generous beyond the Gloo context's own timeout, so the backend's error (naming the failed peer) arrives first.
  w->wait(gr.timeout + std::chrono::milliseconds(5000));
}

std::string rankText(const Group& gr) { return "rank " + std::to_string(gr.rank) + " of " + std::to_string(gr.world); }

// Rethrows a c10d/Gloo failure with the rank in it: the raw messages ("Connection closed by peer") do not say who.
template <typename F>
auto tagged(const Group& gr, const char* what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const c10::Error& e) {
    throw std::runtime_error(std::string("c10d ") + what + " failed on " + rankText(gr) + ": " + e.what_without_backtrace());
  } catch (const std::invalid_argument&) {
    throw;
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("c10d ") + what + " failed on " + rankText(gr) + ": " + e.what());
  }
}

std::shared_ptr<::gloo::transport::Device> glooDevice(const std::string& addr) {
  // GLOO_SOCKET_IFNAME picks the interface as in torch.distributed; a loopback master means a single machine, where
  // binding to 127.0.0.1 avoids depending on the host name resolving; otherwise Gloo's default (the host's address).
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
    return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  if (addr == "localhost" || addr.rfind("127.", 0) == 0) return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

// In PyTorch 2.x ProcessGroupGloo/NCCL are Backends that a ProcessGroup dispatches to by device type; in 1.13 they
// were ProcessGroups themselves. Either way the rest of this file talks to one c10d::ProcessGroup.
template <typename B>
c10::intrusive_ptr<c10d::ProcessGroup> asGroup(c10::intrusive_ptr<B> backend, const c10::intrusive_ptr<c10d::Store>& store,
                                               int rank, int world, bool gloo) {
#if TORCH_VERSION_MAJOR >= 2
  auto pg = c10::make_intrusive<c10d::ProcessGroup>(store, rank, world);
  const auto type = gloo ? c10d::ProcessGroup::BackendType::GLOO : c10d::ProcessGroup::BackendType::NCCL;
  pg->setDefaultBackend(type);
  pg->setBackend(gloo ? c10::DeviceType::CPU : c10::DeviceType::CUDA, type, backend);
  return pg;
#else
  (void)store, (void)rank, (void)world, (void)gloo;
  return backend;
#endif
}

c10d::ReduceOp reduceOp(const std::string& op, double& divisor, int world) {
  if (op == "sum") return c10d::ReduceOp::SUM;
  if (op == "avg") {
    divisor = world;
    return c10d::ReduceOp::SUM;
  }
  if (op == "max") return c10d::ReduceOp::MAX;
  if (op == "min") return c10d::ReduceOp::MIN;
  if (op == "product") return c10d::ReduceOp::PRODUCT;
  throw std::invalid_argument("allreduce: op must be 'sum', 'avg', 'max', 'min' or 'product', got '" + op + "'");
}

#ifdef RETAIN_C10D_REDUCER

// The Reducer's own reduction averages over ranks (it divides while copying into the bucket). The trainer's loss is
// already normalised by the GLOBAL token count, so the ranks' gradients must be summed: a communication hook that
// all-reduces with SUM replaces the default (with a hook installed the Reducer does not divide). Gloo has no
// bfloat16/half sum, so such buckets travel as float32 and come back in their own dtype, as in reduceGradients.
class SumHook final : public c10d::CommHookInterface {
 public:
  SumHook(c10::intrusive_ptr<c10d::ProcessGroup> pg, bool gloo, std::chrono::milliseconds timeout, std::string who)
      : pg_(std::move(pg)), gloo_(gloo), timeout_(timeout), who_(std::move(who)) {}

  c10::intrusive_ptr<c10::ivalue::Future> runHook(c10d::GradBucket& bucket) override {
    at::Tensor buf = bucket.getBufferRef();
    const auto dtype = buf.scalar_type();
    if (gloo_ && (dtype == at::kBFloat16 || dtype == at::kHalf)) buf = buf.to(at::kFloat);
    std::vector<at::Tensor> ts{buf};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    o.timeout = timeout_;
    auto fut = pg_->allreduce(ts, o)->getFuture();
    // The Reducer rethrows a failed bucket at the end of backward; the raw Gloo text ("Connection closed by peer")
    // does not say which rank saw it, so the message gets the same prefix as every other collective here.
    return fut->then(
        [who = who_, dtype](c10::ivalue::Future& f) -> c10::IValue {
          if (f.hasError()) throw std::runtime_error("c10d allreduce failed on " + who + ": " + f.tryRetrieveErrorMessage());
          const c10::IValue& v = f.value();
          at::Tensor t = v.isTensor() ? v.toTensor() : v.toTensorVector().at(0);
          return t.scalar_type() == dtype ? t : t.to(dtype);
        },
        c10::TensorType::get());
  }

  at::Tensor parseHookResult(const c10::IValue& result) override { return result.toTensor(); }

 private:
  c10::intrusive_ptr<c10d::ProcessGroup> pg_;
  bool gloo_;
  std::chrono::milliseconds timeout_;
  std::string who_;
};

struct Overlap {
  // The Reducer reports to a Logger and, when a round has unused parameters, calls it without checking that one is
  // set; DDP always attaches one, so do we. The Logger holds the Reducer; the Reducer holds it weakly.
  std::shared_ptr<c10d::Reducer> reducer;
  std::shared_ptr<c10d::Logger> logger;
  std::vector<std::vector<size_t>> buckets;
  std::vector<at::Tensor> params;
  int64_t rounds = 0;  // reductions prepared, for info()
};
// Freed before the group they reduce over (destroy()), and never by a static destructor at exit, for the same reason
// as g_group.
std::unordered_map<int64_t, Overlap*> g_overlaps;
int64_t g_nextOverlap = 1;

// prepare_for_backward advises, once per process, turning find_unused_parameters off when a round has no unused
// parameter. Here it must stay on (methods and losses may leave parameters out of a step, and a missed hook would
// stall every rank), so that advice is dropped; every other warning goes to the handler that was there.
// PyTorch 2.x hands the handler a Warning object and moved the handler accessors to c10::WarningUtils.
class DropUnusedAdvice final : public c10::WarningHandler {
 public:
  explicit DropUnusedAdvice(c10::WarningHandler* next) : next_(next) {}
#if TORCH_VERSION_MAJOR >= 2
  void process(const c10::Warning& w) override {
    if (w.msg().rfind("find_unused_parameters=True was specified", 0) == 0) return;
    if (next_) next_->process(w);
  }
#else
  void process(const c10::SourceLocation& loc, const std::string& msg, const bool verbatim) override {
    if (msg.rfind("find_unused_parameters=True was specified", 0) == 0) return;
    if (next_) next_->process(loc, msg, verbatim);
  }
#endif

 private:
  c10::WarningHandler* next_;
};

Overlap& overlapAt(int64_t id, const char* fn) {
  auto it = g_overlaps.find(id);
  if (it == g_overlaps.end()) throw std::invalid_argument(std::string(fn) + ": gradient reducer " + std::to_string(id) + " is unknown or was freed");
  return *it->second;
}

void freeOverlaps() {
  for (auto& [id, o] : g_overlaps) delete o;  // ~Reducer removes its hooks from the parameters' grad accumulators
  g_overlaps.clear();
}

// Gradient accumulation runs the micro-batches before the last without a reduction round, as DDP's no_sync does; the
// round's unused-parameter search then sees only the last micro-batch's graph. libtorch 1.13's Reducer treats a
// parameter outside that graph as unused on this rank even when an earlier micro-batch gave it a gradient, and if
// every rank does so it leaves that local gradient unreduced (the replicas drift apart; dist.reducer.test.ts shows
// it). Such a parameter is put into the graph with a term that adds exactly 0 to the output and 0 to its gradient,
// so its hook fires, it counts as used, and its accumulated gradient is summed like the others.
at::Tensor touchAccumulated(const Overlap& ov, const std::vector<at::Tensor>& outs) {
  std::vector<const at::Tensor*> withGrad;
  for (const auto& p : ov.params)
    if (p.grad().defined()) withGrad.push_back(&p);
  if (withGrad.empty()) return {};  // the usual case (grads cleared, one micro-batch): no graph walk
  std::unordered_set<torch::autograd::Node*> reached;
  std::vector<torch::autograd::Node*> stack;
  auto push = [&](torch::autograd::Node* n) {
    if (n && reached.insert(n).second) stack.push_back(n);
  };
  for (const auto& o : outs) push(o.is_leaf() ? torch::autograd::impl::try_get_grad_accumulator(o).get() : o.grad_fn().get());
  while (!stack.empty()) {
    auto* n = stack.back();
    stack.pop_back();
    for (const auto& e : n->next_edges()) push(e.function.get());
  }
  at::Tensor touch;
  for (const auto* p : withGrad) {
    auto acc = torch::autograd::impl::try_get_grad_accumulator(*p);
    if (acc && reached.count(acc.get())) continue;
    at::Tensor zero = p->mul(0).sum();
    touch = touch.defined() ? touch.add(zero) : zero;
  }
  return touch;
}

#endif  // RETAIN_C10D_REDUCER

#endif  // RETAIN_C10D

[[noreturn, maybe_unused]] void unavailable(const char* fn) {
  throw std::runtime_error(std::string(fn) +
                           ": this build of @retain/torch has no c10d/Gloo (built without c10d/Gloo: install libgloo-dev, "
                           "use a libtorch with USE_DISTRIBUTED, then rebuild with RETAIN_REBUILD=1 npm ci)");
}

// available() -> { c10d, gloo, nccl }
napi_value Available(napi_env env, napi_callback_info) {
  return guarded(env, "distributed.available", [&]() -> napi_value {
    napi_value o;
    napi_create_object(env, &o);
#ifdef RETAIN_C10D
    bool c10d = true;
#else
    bool c10d = false;
#endif
#ifdef RETAIN_NCCL
    bool nccl = true;
#else
    bool nccl = false;
#endif
    napi_set_named_property(env, o, "c10d", flag(env, c10d));
    napi_set_named_property(env, o, "gloo", flag(env, c10d));
    napi_set_named_property(env, o, "nccl", flag(env, nccl));
#ifdef RETAIN_C10D_REDUCER
    bool reducer = true;
#else
    bool reducer = false;
#endif
    napi_set_named_property(env, o, "reducer", flag(env, reducer));
    return o;
  });
}

// init(rank, world, masterAddr, masterPort, timeoutMs, backend)
napi_value Init(napi_env env, napi_callback_info info) {
  return guarded(env, "distributed.init", [&]() -> napi_value {
    DistArgs a(env, info);
    const char* fn = "init";
    int rank = static_cast<int>(number(env, a.at(0, fn), "rank"));
    int world = static_cast<int>(number(env, a.at(1, fn), "worldSize"));
    std::string addr = text(env, a.at(2, fn), "masterAddr");
    double port = number(env, a.at(3, fn), "masterPort");
    double timeoutMs = number(env, a.at(4, fn), "timeoutMs");
    std::string backend = text(env, a.at(5, fn), "backend");
    if (world < 1) throw std::invalid_argument("init: worldSize must be at least 1");
    if (rank < 0 || rank >= world) throw std::invalid_argument("init: rank must be in [0, worldSize)");
    if (!(port >= 1 && port <= 65535)) throw std::invalid_argument("init: masterPort must be in 1..65535");
    if (!(timeoutMs > 0)) throw std::invalid_argument("init: timeoutMs must be positive");
#ifdef RETAIN_C10D
    if (g_group) throw std::runtime_error("init: a process group already exists in this process (destroy it first)");
    auto gr = std::make_unique<Group>();
    gr->rank = rank;
    gr->world = world;
    gr->backend = backend;
    gr->timeout = std::chrono::milliseconds(static_cast<int64_t>(timeoutMs));
    tagged(*gr, "rendezvous", [&]() {
      c10d::TCPStoreOptions so;
      so.port = static_cast<uint16_t>(port);
      so.isServer = rank == 0;
      so.numWorkers = static_cast<size_t>(world);
      so.waitWorkers = true;
      so.timeout = gr->timeout;
      gr->store = c10::make_intrusive<c10d::TCPStore>(addr, so);
      if (backend == "gloo") {
        auto opts = c10d::ProcessGroupGloo::Options::create(gr->timeout);
        opts->devices.push_back(glooDevice(addr));
        gr->pg = asGroup(c10::make_intrusive<c10d::ProcessGroupGloo>(gr->store, rank, world, opts), gr->store, rank, world, true);
      } else if (backend == "nccl") {
#ifdef RETAIN_NCCL
        auto opts = c10d::ProcessGroupNCCL::Options::create();
        opts->timeout = gr->timeout;
        gr->pg = asGroup(c10::make_intrusive<c10d::ProcessGroupNCCL>(gr->store, rank, world, opts), gr->store, rank, world, false);
#else
        throw std::invalid_argument("init: this build has no NCCL (a CUDA libtorch with NCCL headers is needed); use backend 'gloo' on CPU");
#endif
      } else {
        throw std::invalid_argument("init: backend must be 'gloo' or 'nccl', got '" + backend + "'");
      }
      return 0;
    });
    g_group = gr.release();
    return undef(env);
#else
    (void)rank;
    (void)backend;
    unavailable("distributed.init");
#endif
  });
}

// allreduce(tensors, op) -> work id. One tensor: allreduce; several: allreduce_coalesced (one dtype).
napi_value Allreduce(napi_env env, napi_callback_info info) {
  return guarded(env, "distributed.allreduce", [&]() -> napi_value {
#ifdef RETAIN_C10D
    DistArgs a(env, info);
    Group& gr = group("allreduce");
    auto ts = tensorList(env, a.at(0, "allreduce"), "tensors");
    checkTensors(ts, gr, "allreduce");
    double divisor = 1;
    std::string op = a.argc > 1 ? text(env, a.argv[1], "op") : "sum";
    auto rop = reduceOp(op, divisor, gr.world);
    auto work = tagged(gr, "allreduce", [&]() {
      if (ts.size() == 1) {
        c10d::AllreduceOptions o;
        o.reduceOp = rop;
        o.timeout = gr.timeout;
        return gr.pg->allreduce(ts, o);
      }
      c10d::AllreduceCoalescedOptions o;
      o.reduceOp = rop;
      o.timeout = gr.timeout;
      return gr.pg->allreduce_coalesced(ts, o);
    });
    int64_t id = g_nextWork++;
    g_pending.emplace(id, Pending{work, std::move(ts), divisor});
    return integer(env, id);
#else
    (void)info;
    unavailable("distributed.allreduce");
#endif
  });
}

// wait(workId): blocks until the work is done (or fails, or passes its deadline); the id is spent either way.
napi_value Wait(napi_env env, napi_callback_info info) {
  return guarded(env, "distributed.wait", [&]() -> napi_value {
#ifdef RETAIN_C10D
    DistArgs a(env, info);
    Group& gr = group("wait");
    auto id = static_cast<int64_t>(number(env, a.at(0, "wait"), "work"));
    auto it = g_pending.find(id);
    if (it == g_pending.end()) throw std::invalid_argument("wait: work " + std::to_string(id) + " is unknown or was already waited on");
    Pending p = std::move(it->second);
    g_pending.erase(it);
    tagged(gr, "allreduce", [&]() {
      waitFor(p.work, gr);
      return 0;
    });
    if (p.divisor != 1) {
      at::NoGradGuard ng;
      for (auto& t : p.tensors) t.div_(p.divisor);
    }
    return undef(env);
#else
    (void)info;
    unavailable("distributed.wait");
#endif
  });
}

// broadcast(tensors, root): in place, synchronous.
napi_value Broadcast(napi_env env, napi_callback_info info) {
  return guarded(env, "distributed.broadcast", [&]() -> napi_value {
#ifdef RETAIN_C10D
    DistArgs a(env, info);
    Group& gr = group("broadcast");
    auto ts = tensorList(env, a.at(0, "broadcast"), "tensors");
    int root = static_cast<int>(number(env, a.at(1, "broadcast"), "root"));
    if (root < 0 || root >= gr.world) throw std::invalid_argument("broadcast: root must be a rank in [0, worldSize)");
    checkTensors(ts, gr, "broadcast");
    tagged(gr, "broadcast", [&]() {
      // Gloo broadcasts one tensor per call (a list means one tensor per device), so each goes on its own.
      std::vector<c10::intrusive_ptr<c10d::Work>> works;
      for (auto& t : ts) {
        std::vector<at::Tensor> one{t};
        c10d::BroadcastOptions o;
        o.rootRank = root;
        o.rootTensor = 0;
        o.timeout = gr.timeout;
        works.push_back(gr.pg->broadcast(one, o));
      }
      for (auto& w : works) waitFor(w, gr);
      return 0;
    });
    return undef(env);
#else
    (void)info;
    unavailable("distributed.broadcast");
#endif
  });
}

// allgather(tensor) -> [handle per rank], synchronous.
napi_value Allgather(napi_env env, napi_callback_info info) {
  return guarded(env, "distributed.allgather", [&]() -> napi_value {
#ifdef RETAIN_C10D
    DistArgs a(env, info);
    Group& gr = group("allgather");
    auto in = tensorList(env, a.at(0, "allgather"), "tensor");
    if (in.size() != 1) throw std::invalid_argument("allgather: pass exactly one tensor");
    checkTensors(in, gr, "allgather");
    std::vector<std::vector<at::Tensor>> out(1);
    for (int r = 0; r < gr.world; ++r) out[0].push_back(at::empty_like(in[0]));
    tagged(gr, "allgather", [&]() {
      c10d::AllgatherOptions o;
      o.timeout = gr.timeout;
      waitFor(gr.pg->allgather(out, in, o), gr);
      return 0;
    });
    napi_value arr;
    napi_create_array_with_length(env, out[0].size(), &arr);
    for (size_t r = 0; r < out[0].size(); ++r) {
      napi_value h;
      napi_create_int32(env, retain::adoptTensor(out[0][r]), &h);
      napi_set_element(env, arr, static_cast<uint32_t>(r), h);
    }
    return arr;
#else
    (void)info;
    unavailable("distributed.allgather");
#endif
  });
}

// storeSet(key, value): a small string in the rendezvous TCPStore, for decisions one rank makes for all (the forgetting
// monitor's stop/rollback). Keys live under "retain/" so they cannot meet the process group's own keys.
napi_value StoreSet(napi_env env, napi_callback_info info) {
  return guarded(env, "distributed.storeSet", [&]() -> napi_value {
#ifdef RETAIN_C10D
    DistArgs a(env, info);
    Group& gr = group("storeSet");
    std::string key = "retain/" + text(env, a.at(0, "storeSet"), "key");
    std::string value = text(env, a.at(1, "storeSet"), "value");
    tagged(gr, "store set", [&]() {
      gr.store->set(key, std::vector<uint8_t>(value.begin(), value.end()));
      return 0;
    });
    return undef(env);
#else
    (void)info;
    unavailable("distributed.storeSet");
#endif
  });
}

// storeGet(key, timeoutMs) -> value: waits up to timeoutMs (not the group's timeout: the writer may first run a long
// computation) for the key, then reads it. A writer that dies closes the store's socket and ends the wait at once.
napi_value StoreGet(napi_env env, napi_callback_info info) {
  return guarded(env, "distributed.storeGet", [&]() -> napi_value {
#ifdef RETAIN_C10D
    DistArgs a(env, info);
    Group& gr = group("storeGet");
    std::string key = "retain/" + text(env, a.at(0, "storeGet"), "key");
    double timeoutMs = number(env, a.at(1, "storeGet"), "timeoutMs");
    if (!(timeoutMs > 0)) throw std::invalid_argument("storeGet: timeoutMs must be positive");
    std::string value = tagged(gr, "store get", [&]() {
      gr.store->wait({key}, std::chrono::milliseconds(static_cast<int64_t>(timeoutMs)));
      auto v = gr.store->get(key);
      return std::string(v.begin(), v.end());
    });
    napi_value r;
    napi_create_string_utf8(env, value.data(), value.size(), &r);
    return r;
#else
    (void)info;
    unavailable("distributed.storeGet");
#endif
  });
}

napi_value Barrier(napi_env env, napi_callback_info) {
  return guarded(env, "distributed.barrier", [&]() -> napi_value {
#ifdef RETAIN_C10D
    Group& gr = group("barrier");
    tagged(gr, "barrier", [&]() {
      c10d::BarrierOptions o;
      o.timeout = gr.timeout;
      waitFor(gr.pg->barrier(o), gr);
      return 0;
    });
    return undef(env);
#else
    unavailable("distributed.barrier");
#endif
  });
}

// destroy(): drops the group and the store; pending works are abandoned. A no-op without a group.
napi_value Destroy(napi_env env, napi_callback_info) {
  return guarded(env, "distributed.destroy", [&]() -> napi_value {
#ifdef RETAIN_C10D
#ifdef RETAIN_C10D_REDUCER
    freeOverlaps();
#endif
    g_pending.clear();
    delete g_group;
    g_group = nullptr;
#endif
    return undef(env);
  });
}

// info() -> { rank, worldSize, backend } or null when no group exists.
napi_value Info(napi_env env, napi_callback_info) {
  return guarded(env, "distributed.info", [&]() -> napi_value {
#ifdef RETAIN_C10D
    if (!g_group) {
      napi_value n;
      napi_get_null(env, &n);
      return n;
    }
    napi_value o;
    napi_create_object(env, &o);
    napi_set_named_property(env, o, "rank", integer(env, g_group->rank));
    napi_set_named_property(env, o, "worldSize", integer(env, g_group->world));
    napi_value b;
    napi_create_string_utf8(env, g_group->backend.c_str(), NAPI_AUTO_LENGTH, &b);
    napi_set_named_property(env, o, "backend", b);
    napi_set_named_property(env, o, "pending", integer(env, static_cast<int64_t>(g_pending.size())));
    return o;
#else
    napi_value n;
    napi_get_null(env, &n);
    return n;
#endif
  });
}

#ifndef RETAIN_C10D_REDUCER
[[noreturn]] void noReducer(const char* fn) {
  throw std::runtime_error(std::string(fn) + ": this build of @retain/torch has no c10d::Reducer (libtorch without reducer.hpp or its "
                           "exported symbols); reduce gradients after backward (reduceGradients) instead");
}
#endif

// reducerNew(params, names, bucketBytes, firstBucketBytes) -> { id, buckets: [[param index...]...] }
// `params` in the order backward produces their gradients (the caller passes them last layer first); bucket 0, the
// first to fill, is capped at firstBucketBytes so that communication starts early, the others at bucketBytes. A
// parameter listed twice (tied weights) is kept once: it has one grad accumulator. Unused parameters are found per
// round from the autograd graph (find_unused_parameters): they are marked ready at once, and a parameter that no rank
// used keeps its .grad untouched (null stays null), as one process would leave it.
napi_value ReducerNew(napi_env env, napi_callback_info info) {
  return guarded(env, "distributed.reducerNew", [&]() -> napi_value {
#ifdef RETAIN_C10D_REDUCER
    DistArgs a(env, info);
    const char* fn = "reducerNew";
    Group& gr = group(fn);
    auto given = tensorList(env, a.at(0, fn), "params");
    napi_value namesV = a.at(1, fn);
    double bucketBytes = number(env, a.at(2, fn), "bucketBytes");
    double firstBytes = number(env, a.at(3, fn), "firstBucketBytes");
    if (!(bucketBytes >= 1) || !(firstBytes >= 1)) throw std::invalid_argument("reducerNew: bucket sizes must be positive");
    std::vector<at::Tensor> params;
    std::unordered_map<size_t, std::string> names;
    std::vector<const void*> seen;
    for (size_t i = 0; i < given.size(); ++i) {
      const auto& p = given[i];
      if (!p.is_leaf() || !p.requires_grad())
        throw std::invalid_argument("reducerNew: parameter " + std::to_string(i) + " is not a leaf that requires grad");
      if (gr.backend == "gloo" && !p.device().is_cpu())
        throw std::invalid_argument("reducerNew: the Gloo backend reduces CPU tensors, got a parameter on " + p.device().str());
      const void* impl = p.unsafeGetTensorImpl();
      if (std::find(seen.begin(), seen.end(), impl) != seen.end()) continue;
      seen.push_back(impl);
      napi_value nv;
      napi_get_element(env, namesV, static_cast<uint32_t>(i), &nv);
      napi_valuetype t;
      napi_typeof(env, nv, &t);
      if (t == napi_string) names[params.size()] = text(env, nv, "names");
      params.push_back(p);
    }
    if (params.empty()) throw std::invalid_argument("reducerNew: no parameters");
    auto ov = std::make_unique<Overlap>();
    ov->params = params;
    tagged(gr, "reducer setup", [&]() {
      std::vector<size_t> limits{static_cast<size_t>(firstBytes), static_cast<size_t>(bucketBytes)};
      std::vector<bool> sparse(params.size(), false);
      auto assigned = c10d::compute_bucket_assignment_by_size(params, limits, sparse);
      ov->buckets = std::get<0>(assigned);
#if TORCH_VERSION_MAJOR >= 2
      // 2.x dropped the per-bucket limits argument and added three with DDP's defaults (skip_all_reduce_unused_params,
      // use_python_reducer, bucket_bytes_cap_list).
      ov->reducer = std::make_shared<c10d::Reducer>(params, ov->buckets, gr.pg, sparse, static_cast<int64_t>(bucketBytes),
                                                    /*find_unused_parameters=*/true, /*gradient_as_bucket_view=*/false, names,
                                                    static_cast<int64_t>(firstBytes), false, false, std::vector<int64_t>{});
#else
      ov->reducer = std::make_shared<c10d::Reducer>(params, ov->buckets, std::get<1>(assigned), gr.pg, sparse,
                                                    static_cast<int64_t>(bucketBytes), /*find_unused_parameters=*/true,
                                                    /*gradient_as_bucket_view=*/false, names, static_cast<int64_t>(firstBytes));
#endif
      ov->logger = std::make_shared<c10d::Logger>(ov->reducer);
      ov->reducer->set_logger(ov->logger);
      ov->reducer->register_comm_hook(std::make_unique<SumHook>(gr.pg, gr.backend == "gloo", gr.timeout, rankText(gr)));
      return 0;
    });
    int64_t id = g_nextOverlap++;
    napi_value o, arr;
    napi_create_object(env, &o);
    napi_set_named_property(env, o, "id", integer(env, id));
    napi_create_array_with_length(env, ov->buckets.size(), &arr);
    for (size_t b = 0; b < ov->buckets.size(); ++b) {
      napi_value inner;
      napi_create_array_with_length(env, ov->buckets[b].size(), &inner);
      for (size_t k = 0; k < ov->buckets[b].size(); ++k) napi_set_element(env, inner, static_cast<uint32_t>(k), integer(env, static_cast<int64_t>(ov->buckets[b][k])));
      napi_set_element(env, arr, static_cast<uint32_t>(b), inner);
    }
    napi_set_named_property(env, o, "buckets", arr);
    g_overlaps.emplace(id, ov.release());
    return o;
#else
    (void)info;
    noReducer("distributed.reducerNew");
#endif
  });
}

// reducerPrepare(id, outputs) -> outputs to run backward from: the next backward from them reduces. Gradients that
// earlier backwards left in .grad (micro-batches of gradient accumulation run without prepare: DDP's no_sync) are
// part of what is reduced; when one of those parameters is outside this graph, outputs[0] comes back plus an exact
// zero that reaches it (touchAccumulated), otherwise the handles given come back.
napi_value ReducerPrepare(napi_env env, napi_callback_info info) {
  return guarded(env, "distributed.reducerPrepare", [&]() -> napi_value {
#ifdef RETAIN_C10D_REDUCER
    DistArgs a(env, info);
    const char* fn = "reducerPrepare";
    Group& gr = group(fn);
    auto& ov = overlapAt(static_cast<int64_t>(number(env, a.at(0, fn), "reducer")), fn);
    napi_value given = a.at(1, fn);
    auto outs = tensorList(env, given, "outputs");
    if (outs.empty()) throw std::invalid_argument("reducerPrepare: no outputs given");
    for (const auto& o : outs)
      if (!o.requires_grad()) throw std::invalid_argument("reducerPrepare: an output does not require grad, so backward from it reduces nothing");
    bool replaced = false;
    {
      at::AutoGradMode on(true);
      at::Tensor touch = touchAccumulated(ov, outs);
      if (touch.defined()) {
        outs[0] = outs[0].add(touch);
        replaced = true;
      }
    }
    tagged(gr, "reducer prepare", [&]() {
      // rebuild_buckets() first checks that the previous round finished (a backward that reduced nothing, or failed
      // half-way, is reported here instead of desynchronising the ranks); with unused-parameter search on it never
      // re-buckets, so it sends nothing.
      ov.reducer->rebuild_buckets();
      ov.reducer->prepare_for_forward();
#if TORCH_VERSION_MAJOR >= 2
      DropUnusedAdvice quiet(c10::WarningUtils::get_warning_handler());
      c10::WarningUtils::WarningHandlerGuard guard(&quiet);
#else
      DropUnusedAdvice quiet(c10::Warning::get_warning_handler());
      c10::Warning::WarningHandlerGuard guard(&quiet);
#endif
      ov.reducer->prepare_for_backward(outs);
      return 0;
    });
    ov.rounds++;
    if (!replaced) return given;
    napi_value arr;
    napi_create_array_with_length(env, outs.size(), &arr);
    for (size_t i = 0; i < outs.size(); ++i) {
      napi_value h;
      if (i == 0) napi_create_int32(env, retain::adoptTensor(outs[0]), &h);
      else napi_get_element(env, given, static_cast<uint32_t>(i), &h);
      napi_set_element(env, arr, static_cast<uint32_t>(i), h);
    }
    return arr;
#else
    (void)info;
    noReducer("distributed.reducerPrepare");
#endif
  });
}

// reducerFree(id): removes the hooks; a no-op for an unknown id (the group's destroy() frees them all).
napi_value ReducerFree(napi_env env, napi_callback_info info) {
  return guarded(env, "distributed.reducerFree", [&]() -> napi_value {
#ifdef RETAIN_C10D_REDUCER
    DistArgs a(env, info);
    auto id = static_cast<int64_t>(number(env, a.at(0, "reducerFree"), "reducer"));
    auto it = g_overlaps.find(id);
    if (it != g_overlaps.end()) {
      delete it->second;
      g_overlaps.erase(it);
    }
#else
    (void)info;
#endif
    return undef(env);
  });
}

}  // namespace

namespace retain {

void registerDistributed(napi_env env, napi_value exports) {
  struct Fn {
    const char* name;
    napi_callback cb;
  };
  const Fn fns[] = {
      {"distAvailable", Available}, {"distInit", Init},           {"distAllreduce", Allreduce}, {"distWait", Wait},
      {"distBroadcast", Broadcast}, {"distAllgather", Allgather}, {"distBarrier", Barrier},     {"distDestroy", Destroy},
      {"distInfo", Info},           {"distReducerNew", ReducerNew}, {"distReducerPrepare", ReducerPrepare},
      {"distReducerFree", ReducerFree}, {"distStoreSet", StoreSet}, {"distStoreGet", StoreGet},
  };
  for (const auto& f : fns) {
    napi_value fn;
    if (napi_create_function(env, f.name, NAPI_AUTO_LENGTH, f.cb, nullptr, &fn) != napi_ok) return;
    napi_set_named_property(env, exports, f.name, fn);
  }
}

}  // namespace retain
