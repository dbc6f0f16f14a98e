// retain's native engine: libtorch behind N-API.
//
// Design (see shared DESIGN.md): one generic boxed entry point reaches every ATen overload. JS holds tensors as
// integer handles into a slot table; ops take handles and return new handles. Nothing here knows any particular op:
// argument conversion is driven by the op's FunctionSchema.
//
// Every exported function runs under Guard(), which turns C++ exceptions into JS exceptions: an exception escaping
// into N-API would abort Node.

#include <node_api.h>

#include "engine.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <torch/version.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/custom_function.h>

#ifdef RETAIN_CUDA
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <cerrno>
#include <dlfcn.h>
#include <pthread.h>
#include <csignal>
#include <malloc.h>
#include <cstdlib>
#include <unistd.h>
#include <cstring>
#include <functional>
#include <unordered_map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

// ---------------------------------------------------------------------------------------------------------------
// Errors

enum class JsErrKind { Error, TypeError, RangeError };

struct JsError : std::runtime_error {
  JsErrKind kind;
  JsError(JsErrKind k, const std::string& m) : std::runtime_error(m), kind(k) {}
};

[[noreturn]] void throwType(const std::string& m) { throw JsError(JsErrKind::TypeError, m); }
[[noreturn]] void throwRange(const std::string& m) { throw JsError(JsErrKind::RangeError, m); }
[[noreturn]] void throwErr(const std::string& m) { throw JsError(JsErrKind::Error, m); }

// Context for error messages: the op being called, so "aten::mm: mat1 and mat2 shapes cannot be multiplied" reads well.
// JS calls arrive on the main thread only; a plain static avoids __tls_get_addr on every op.
const char* g_ctx = nullptr;

std::string withCtx(const std::string& m) {
  if (!g_ctx) return m;
  return std::string(g_ctx) + ": " + m;
}

void throwJs(napi_env env, JsErrKind kind, const std::string& msg) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (pending) return;
  switch (kind) {
    case JsErrKind::TypeError: napi_throw_type_error(env, nullptr, msg.c_str()); break;
    case JsErrKind::RangeError: napi_throw_range_error(env, nullptr, msg.c_str()); break;
    default: napi_throw_error(env, nullptr, msg.c_str()); break;
  }
}

// A N-API call failed: a JS exception may already be pending (e.g. a getter threw); otherwise report the status.
struct NapiFail {};
inline void ok(napi_status s) {
  if (s != napi_ok) throw NapiFail{};
}

template <typename F>
napi_value Guard(napi_env env, const char* ctx, F&& f) {
  g_ctx = ctx;
  try {
    napi_value r = f();
    g_ctx = nullptr;
    return r;
  } catch (const JsError& e) {
    throwJs(env, e.kind, withCtx(e.what()));
  } catch (const c10::TypeError& e) {
    throwJs(env, JsErrKind::TypeError, withCtx(e.what_without_backtrace()));
  } catch (const c10::IndexError& e) {
    throwJs(env, JsErrKind::RangeError, withCtx(e.what_without_backtrace()));
  } catch (const c10::Error& e) {
    throwJs(env, JsErrKind::Error, withCtx(e.what_without_backtrace()));
  } catch (const NapiFail&) {
    const napi_extended_error_info* info = nullptr;
    napi_get_last_error_info(env, &info);
    throwJs(env, JsErrKind::Error,
            withCtx(std::string("N-API call failed: ") + (info && info->error_message ? info->error_message : "?")));
  } catch (const std::bad_alloc&) {
    throwJs(env, JsErrKind::RangeError, withCtx("out of memory"));
  } catch (const std::exception& e) {
    throwJs(env, JsErrKind::Error, withCtx(e.what()));
  } catch (...) {
    throwJs(env, JsErrKind::Error, withCtx("unknown native exception"));
  }
  g_ctx = nullptr;
  return nullptr;
}

// ---------------------------------------------------------------------------------------------------------------
// glibc malloc for tensor-sized blocks (docs/MEMORY.md). By default glibc maps blocks of 128 KiB and more, raises that
// threshold to the largest block freed so far (at most 32 MiB) and trims the top of the heap whenever more than twice
// that is free. A training step frees its activations together at its end, so every step gave the top of the heap
// back and faulted it in again: ~15,000 page faults per d=256 Llama step (Python's peer: 0). Fixed thresholds instead:
// blocks under 32 MiB come from the heap and up to 512 MiB of free heap top stays mapped (128 MiB was measured too: a
// step that frees ~450 MB at once then re-faulted all of it every step, 2.7x slower than glibc's default).
// RETAIN_MALLOC=glibc keeps glibc's defaults; RETAIN_MALLOC=compact maps blocks of 1 MiB and more, so RSS follows live
// data at the cost of faulting every such block in anew. A MALLOC_*_ variable or GLIBC_TUNABLES set by the user wins.
#ifdef __GLIBC__
struct MallocTuning {
  MallocTuning() {
    for (const char* v : {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES"})
      if (std::getenv(v)) return;
    const char* m = std::getenv("RETAIN_MALLOC");
    const std::string mode = m ? m : "";
    if (mode == "glibc") return;
    if (mode == "compact") {
      mallopt(M_MMAP_THRESHOLD, 1 << 20);
      return;
    }
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
  }
} g_mallocTuning;
#endif

// ---------------------------------------------------------------------------------------------------------------
// Handle table. JS refers to tensors by small integers. Freed slots are reused; the JS side invalidates its handle on
// dispose so a stale object cannot reach a reused slot.

std::vector<at::Tensor> g_slots;
std::vector<int32_t> g_free;
int64_t g_live = 0;

// Storage bytes reported to V8 are batched: calling napi_adjust_external_memory on every op costs more than the op.
// Only tensors that the garbage collector is responsible for are reported: JS calls gcOwned(h) when it hands a tensor
// to its FinalizationRegistry (made outside any tidy() scope, or kept). Temporaries inside a scope are freed by the
// scope, never by GC; reporting them made V8 start one or two full collections per training step that could free
// nothing (about 25 ms of a 300 ms d=256 Llama step, docs/RESULTS.md). The bytes are remembered per handle, so a
// release takes back exactly what was reported (the old count-on-create rule drifted under autograd, MEMORY.md).
std::vector<int64_t> g_reported;  // parallel to g_slots
int64_t g_pendingExternal = 0;
int64_t g_reportedExternal = 0;
constexpr int64_t kExternalBatch = 8 << 20;

void flushExternal(napi_env env, bool force) {
  if (force || g_pendingExternal > kExternalBatch || g_pendingExternal < -kExternalBatch) {
    int64_t result = 0;
    napi_adjust_external_memory(env, g_pendingExternal, &result);
    g_reportedExternal += g_pendingExternal;
    g_pendingExternal = 0;
  }
}

inline int64_t storageBytes(const at::Tensor& t) {
  // Only host memory is V8's business: reporting gigabytes of GPU activations as external memory made V8 run
  // full collections over and over in a CUDA training loop.
  if (!t.defined() || !t.has_storage() || !t.device().is_cpu()) return 0;
  // Views share a storage: count only the first reference so V8 is not told about one buffer many times.
  const auto& st = t.storage();
  if (st.use_count() > 1) return 0;
  return static_cast<int64_t>(st.nbytes());
}

int32_t put(at::Tensor t) {
  int32_t h;
  if (!g_free.empty()) {
    h = g_free.back();
    g_free.pop_back();
    g_slots[h] = std::move(t);
  } else {
    h = static_cast<int32_t>(g_slots.size());
    g_slots.push_back(std::move(t));
    g_reported.push_back(0);
  }
  ++g_live;
  return h;
}

at::Tensor& get(int32_t h) {
  if (h == -1) throwErr("a disposed tensor was used (dispose() or a finished tidy() released it)");
  if (h < 0 || static_cast<size_t>(h) >= g_slots.size() || !g_slots[h].defined())
    throwErr("tensor handle " + std::to_string(h) + " is not live (was it disposed?)");
  return g_slots[h];
}

void release(int32_t h) {
  if (h < 0 || static_cast<size_t>(h) >= g_slots.size() || !g_slots[h].defined()) return;
  auto& t = g_slots[h];
  g_pendingExternal -= g_reported[h];
  g_reported[h] = 0;
  t.reset();
  g_free.push_back(h);
  --g_live;
}

// ---------------------------------------------------------------------------------------------------------------
// N-API helpers

inline napi_valuetype typeOf(napi_env env, napi_value v) {
  napi_valuetype t;
  ok(napi_typeof(env, v, &t));
  return t;
}

inline bool isNullish(napi_env env, napi_value v) {
  auto t = typeOf(env, v);
  return t == napi_undefined || t == napi_null;
}

inline double getNumber(napi_env env, napi_value v, const char* what) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) throwType(std::string(what) + " must be a number");
  return d;
}

inline int64_t getInt(napi_env env, napi_value v, const char* what) {
  double d = getNumber(env, v, what);
  if (!(d == d) || d != static_cast<double>(static_cast<int64_t>(d)) || d > 9.2e18 || d < -9.2e18)
    throwType(std::string(what) + " must be an integer, got " + std::to_string(d));
  return static_cast<int64_t>(d);
}

inline bool getBool(napi_env env, napi_value v, const char* what) {
  bool b;
  if (napi_get_value_bool(env, v, &b) != napi_ok) throwType(std::string(what) + " must be a boolean");
  return b;
}

// Handles and op ids are int32 in JS numbers. napi_get_value_int32 would turn NaN and Infinity into 0 and truncate
// 1.5 to 1, silently naming another tensor, so a value is accepted only when it is exactly an int32.
inline bool asInt32(napi_env env, napi_value v, int32_t* out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) return false;
  if (!(d >= -2147483648.0 && d <= 2147483647.0) || d != static_cast<double>(static_cast<int32_t>(d))) return false;
  *out = static_cast<int32_t>(d);
  return true;
}

inline int32_t getHandle(napi_env env, napi_value v, const char* what) {
  int32_t h;
  if (typeOf(env, v) != napi_number) throwType(std::string(what) + " must be a Tensor");
  if (!asInt32(env, v, &h)) throwType(std::string(what) + ": a tensor handle must be an integer");
  return h;
}

std::string getString(napi_env env, napi_value v, const char* what) {
  if (typeOf(env, v) != napi_string) throwType(std::string(what) + " must be a string");
  size_t len;
  ok(napi_get_value_string_utf8(env, v, nullptr, 0, &len));
  std::string s(len, '\0');
  ok(napi_get_value_string_utf8(env, v, s.data(), len + 1, &len));
  return s;
}

inline napi_value num(napi_env env, double d) {
  napi_value r;
  ok(napi_create_double(env, d, &r));
  return r;
}
inline napi_value i32(napi_env env, int32_t d) {
  napi_value r;
  ok(napi_create_int32(env, d, &r));
  return r;
}
inline napi_value boolean(napi_env env, bool b) {
  napi_value r;
  ok(napi_get_boolean(env, b, &r));
  return r;
}
inline napi_value str(napi_env env, const std::string& s) {
  napi_value r;
  ok(napi_create_string_utf8(env, s.data(), s.size(), &r));
  return r;
}
inline napi_value undef(napi_env env) {
  napi_value r;
  ok(napi_get_undefined(env, &r));
  return r;
}
inline napi_value null(napi_env env) {
  napi_value r;
  ok(napi_get_null(env, &r));
  return r;
}

uint32_t arrayLength(napi_env env, napi_value v, const char* what) {
  bool isArr = false;
  ok(napi_is_array(env, v, &isArr));
  if (!isArr) throwType(std::string(what) + " must be an array");
  uint32_t n;
  ok(napi_get_array_length(env, v, &n));
  return n;
}

inline napi_value element(napi_env env, napi_value arr, uint32_t i) {
  napi_value e;
  ok(napi_get_element(env, arr, i, &e));
  return e;
}

std::vector<int64_t> getIntList(napi_env env, napi_value v, const char* what) {
  if (typeOf(env, v) == napi_number) return {getInt(env, v, what)};
  uint32_t n = arrayLength(env, v, what);
  std::vector<int64_t> out(n);
  for (uint32_t i = 0; i < n; ++i) out[i] = getInt(env, element(env, v, i), what);
  return out;
}

napi_value tensorOrNull(napi_env env, at::Tensor t) {
  if (!t.defined()) return null(env);
  return i32(env, put(std::move(t)));
}

struct Args {
  static constexpr size_t kMax = 24;
  size_t argc = kMax;
  napi_value argv[kMax];
  napi_value self;
  Args(napi_env env, napi_callback_info info) { ok(napi_get_cb_info(env, info, &argc, argv, &self, nullptr)); }
  napi_value operator[](size_t i) const { return argv[i]; }
  void need(size_t n, const char* fn) const {
    if (argc < n) throwType(std::string(fn) + " expects " + std::to_string(n) + " arguments, got " + std::to_string(argc));
  }
};

// ---------------------------------------------------------------------------------------------------------------
// Op table: schemas pre-digested into argument kinds so a call converts JS values without string work.

enum class K : uint8_t {
  Tensor, TensorList, OptTensorList, Int, SymInt, IntList, SymIntList, Float, FloatList, Bool, BoolList, Scalar,
  ScalarList, ScalarType, Layout, Device, MemoryFormat, String, Generator, Unsupported
};

struct ArgInfo {
  std::string name;
  K kind;
  bool optional;
  c10::optional<int32_t> N;
  c10::optional<c10::IValue> def;
  bool kwargOnly;
  bool write;
};

struct RetInfo {
  K kind;
  bool optional;
  int aliasArg;  // index of the argument this return is an in-place alias of, or -1
};

// Unboxed fast paths for the commonest signature shapes. Boxing (IValue stack in, boxed kernel wrapper, IValue out)
// is a fixed cost per call that dominates tiny ops; a typed handle calls the kernel as at::add does. Which path an op
// takes is decided from its schema alone, so this stays generic: no op is named.
enum class Fast : uint8_t { None, T, TT, TS, TTS, TSS };
using SigT = at::Tensor(const at::Tensor&);
using SigTT = at::Tensor(const at::Tensor&, const at::Tensor&);
using SigTS = at::Tensor(const at::Tensor&, const at::Scalar&);
using SigTTS = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Scalar&);
using SigTSS = at::Tensor(const at::Tensor&, const at::Scalar&, const at::Scalar&);

struct OpInfo {
  c10::OperatorHandle handle;
  std::string fullName;
  std::vector<ArgInfo> args;
  std::vector<RetInfo> rets;
  Fast fast = Fast::None;
  c10::optional<c10::TypedOperatorHandle<SigT>> t;
  c10::optional<c10::TypedOperatorHandle<SigTT>> tt;
  c10::optional<c10::TypedOperatorHandle<SigTS>> ts;
  c10::optional<c10::TypedOperatorHandle<SigTTS>> tts;
  c10::optional<c10::TypedOperatorHandle<SigTSS>> tss;
  std::vector<c10::Scalar> scalarDefaults;  // per argument; used when JS passes undefined on the fast path
  // Argument checks for ops whose libtorch kernels crash (abort, SIGFPE, heap corruption) on inputs they should
  // reject; found by the fuzz test. Runs on the converted stack before the call.
  std::function<void(const torch::jit::Stack&)> guard;
};

std::vector<std::unique_ptr<OpInfo>> g_ops;

K kindOf(const c10::TypePtr& tIn, bool& optional) {
  c10::TypePtr t = tIn;
  optional = false;
  if (t->kind() == c10::TypeKind::OptionalType) {
    optional = true;
    t = t->castRaw<c10::OptionalType>()->getElementType();
  }
  switch (t->kind()) {
    case c10::TypeKind::TensorType: return K::Tensor;
    case c10::TypeKind::IntType: return K::Int;
    case c10::TypeKind::SymIntType: return K::SymInt;
    case c10::TypeKind::FloatType: return K::Float;
    case c10::TypeKind::BoolType: return K::Bool;
    case c10::TypeKind::NumberType: return K::Scalar;
    case c10::TypeKind::StringType: return K::String;
    case c10::TypeKind::DeviceObjType: return K::Device;
    case c10::TypeKind::GeneratorType: return K::Generator;
    case c10::TypeKind::ScalarTypeType: return K::ScalarType;
    case c10::TypeKind::LayoutType: return K::Layout;
    case c10::TypeKind::MemoryFormatType: return K::MemoryFormat;
    case c10::TypeKind::ListType: {
      auto el = t->castRaw<c10::ListType>()->getElementType();
      if (el->kind() == c10::TypeKind::OptionalType) {
        auto inner = el->castRaw<c10::OptionalType>()->getElementType();
        if (inner->kind() == c10::TypeKind::TensorType) return K::OptTensorList;
        return K::Unsupported;
      }
      switch (el->kind()) {
        case c10::TypeKind::TensorType: return K::TensorList;
        case c10::TypeKind::IntType: return K::IntList;
        case c10::TypeKind::SymIntType: return K::SymIntList;
        case c10::TypeKind::FloatType: return K::FloatList;
        case c10::TypeKind::BoolType: return K::BoolList;
        case c10::TypeKind::NumberType: return K::ScalarList;
        default: return K::Unsupported;
      }
    }
    default: return K::Unsupported;
  }
}

const char* kindName(K k) {
  switch (k) {
    case K::Tensor: return "Tensor";
    case K::TensorList: return "Tensor[]";
    case K::OptTensorList: return "Tensor?[]";
    case K::Int: return "int";
    case K::SymInt: return "SymInt";
    case K::IntList: return "int[]";
    case K::SymIntList: return "SymInt[]";
    case K::Float: return "float";
    case K::FloatList: return "float[]";
    case K::Bool: return "bool";
    case K::BoolList: return "bool[]";
    case K::Scalar: return "Scalar";
    case K::ScalarList: return "Scalar[]";
    case K::ScalarType: return "ScalarType";
    case K::Layout: return "Layout";
    case K::Device: return "Device";
    case K::MemoryFormat: return "MemoryFormat";
    case K::String: return "str";
    case K::Generator: return "Generator";
    default: return "unsupported";
  }
}

// The alias set symbol of an argument/return, when it is annotated as written: `Tensor(a!) self`.
c10::optional<c10::Symbol> writeSet(const c10::AliasInfo* a) {
  if (!a || !a->isWrite() || a->beforeSets().size() != 1) return c10::nullopt;
  return *a->beforeSets().begin();
}

// RETAIN_BOXED_ONLY=1 turns the fast paths off (to compare, or to rule them out when debugging).
const bool g_boxedOnly = [] {
  const char* e = std::getenv("RETAIN_BOXED_ONLY");
  return e && *e && *e != '0';
}();

void chooseFastPath(OpInfo& op) {
  if (g_boxedOnly) return;
  if (op.rets.size() != 1 || op.rets[0].kind != K::Tensor || op.rets[0].optional || op.rets[0].aliasArg >= 0) return;
  std::string pattern;
  for (const auto& a : op.args) {
    if (a.optional || a.write) return;
    if (a.kind == K::Tensor && !a.def) pattern += 'T';
    else if (a.kind == K::Scalar) pattern += 'S';
    else return;
  }
  // Aliasing returns (views such as `Tensor(a)`) keep the boxed path: their C++ signatures are the same, but being
  // conservative costs nothing on the ops that matter.
  if (op.handle.schema().returns()[0].alias_info() != nullptr) return;
  op.scalarDefaults.resize(op.args.size());
  for (size_t i = 0; i < op.args.size(); ++i)
    if (op.args[i].kind == K::Scalar && op.args[i].def) op.scalarDefaults[i] = op.args[i].def->toScalar();
  try {
    if (pattern == "T") { op.t = op.handle.typed<SigT>(); op.fast = Fast::T; }
    else if (pattern == "TT") { op.tt = op.handle.typed<SigTT>(); op.fast = Fast::TT; }
    else if (pattern == "TS") { op.ts = op.handle.typed<SigTS>(); op.fast = Fast::TS; }
    else if (pattern == "TTS") { op.tts = op.handle.typed<SigTTS>(); op.fast = Fast::TTS; }
    else if (pattern == "TSS") { op.tss = op.handle.typed<SigTSS>(); op.fast = Fast::TSS; }
  } catch (const c10::Error&) {
    // The registered C++ signature differs (e.g. a SymInt or optional argument): the boxed path handles it.
    op.fast = Fast::None;
  }
}

// Guards by operator name (all overloads). Each names what it requires, so the user gets an error, not a crash.
using Guard_ = std::function<void(const torch::jit::Stack&)>;
Guard_ refuse(const char* why) {
  return [why](const torch::jit::Stack&) { throwErr(why); };
}
const at::Tensor& T(const torch::jit::Stack& s, size_t i) { return s[i].toTensor(); }


// histogramdd's kernels read bins[i] for every coordinate dimension without checking the list's length.
void checkHistogramddBins(const torch::jit::Stack& s) {
  const auto& x = T(s, 0);
  if (x.dim() < 1) throwErr("self must have at least one dimension (the last holds the coordinates)");
  const int64_t D = x.size(-1);
  const auto& b = s[1];
  if (b.isInt()) {
    if (b.toInt() < 1) throwErr("bins must be at least 1");
  } else if (b.isIntList()) {
    auto v = b.toIntVector();
    if (static_cast<int64_t>(v.size()) != D) throwErr("bins must have one entry per coordinate (self.size(-1) = " + std::to_string(D) + ")");
    for (auto n : v) if (n < 1) throwErr("every bin count must be at least 1");
  } else if (b.isTensorList()) {
    if (static_cast<int64_t>(b.toTensorList().size()) != D) throwErr("bins must have one tensor per coordinate (self.size(-1) = " + std::to_string(D) + ")");
  }
}

// The adaptive average pooling backwards index grad_output by self's geometry.
void checkPoolBackward(const torch::jit::Stack& s, int64_t lo, int64_t hi) {
  const auto& g = T(s, 0);
  const auto& x = T(s, 1);
  if (x.dim() < lo || x.dim() > hi || g.dim() != x.dim()) throwErr("grad_output and self must have the same rank (" + std::to_string(lo) + " or " + std::to_string(hi) + ")");
  for (int64_t i = 0; i < x.dim() - (lo - 1); ++i)
    if (g.size(i) != x.size(i)) throwErr("grad_output must keep self's leading (batch, channel) dimensions");
}

const std::unordered_map<std::string, Guard_>& guards() {
  static const std::unordered_map<std::string, Guard_> g = {
      {"aten::native_channel_shuffle", [](const torch::jit::Stack& s) {
         const auto& x = T(s, 0);
         int64_t groups = s[1].toInt();
         if (x.dim() < 3 || groups <= 0 || x.size(1) % groups != 0)
           throwErr("needs a tensor of 3+ dimensions whose channel count (dim 1) is divisible by groups > 0");
       }},
      {"aten::channel_shuffle", [](const torch::jit::Stack& s) {
         const auto& x = T(s, 0);
         int64_t groups = s[1].toInt();
         if (x.dim() < 3 || groups <= 0 || x.size(1) % groups != 0)
           throwErr("needs a tensor of 3+ dimensions whose channel count (dim 1) is divisible by groups > 0");
       }},
      {"aten::matrix_exp_backward", [](const torch::jit::Stack& s) {
         const auto& x = T(s, 0);
         if (x.dim() < 2 || x.size(-1) != x.size(-2) || !T(s, 1).sizes().equals(x.sizes()))
           throwErr("needs square matrices (.., n, n) and a gradient of the same shape");
       }},
      {"aten::rrelu_with_noise", [](const torch::jit::Stack& s) {
         if (T(s, 1).numel() != T(s, 0).numel()) throwErr("noise must have as many elements as self");
       }},
      {"aten::rrelu_with_noise_", [](const torch::jit::Stack& s) {
         if (T(s, 1).numel() != T(s, 0).numel()) throwErr("noise must have as many elements as self");
       }},
      {"aten::rrelu_with_noise_backward", [](const torch::jit::Stack& s) {
         if (T(s, 2).numel() != T(s, 1).numel() || T(s, 0).numel() != T(s, 1).numel())
           throwErr("grad_output, self and noise must have the same number of elements");
       }},
      {"aten::_transform_bias_rescale_qkv", [](const torch::jit::Stack& s) {
         int64_t heads = s[2].toInt();
         const auto& qkv = T(s, 0);
         if (heads <= 0 || qkv.dim() != 3 || qkv.size(2) % (3 * heads) != 0)
           throwErr("needs qkv [B, T, 3·D] with D divisible by num_heads > 0");
       }},
      {"aten::_symeig_helper", [](const torch::jit::Stack& s) {
         const auto& x = T(s, 0);
         if (x.dim() < 2 || x.size(-1) != x.size(-2)) throwErr("needs square matrices (.., n, n)");
       }},
      {"aten::unfold_backward", [](const torch::jit::Stack& s) {
         if (s[3].toInt() <= 0 || s[4].toInt() <= 0) throwErr("size and step must be positive");
       }},
      {"aten::quantized_lstm_cell", [](const torch::jit::Stack& s) {
         if (s[1].toTensorList().size() != 2) throwErr("hx must hold two tensors (h, c)");
       }},
      {"aten::native_batch_norm", [](const torch::jit::Stack& s) {
         if (T(s, 0).numel() == 0) throwErr("needs a non-empty input (batch_norm handles empty inputs)");
       }},
      {"aten::align_tensors", [](const torch::jit::Stack& s) {
         if (s[0].toTensorList().empty()) throwErr("needs at least one tensor");
       }},
      {"aten::pixel_shuffle", [](const torch::jit::Stack& s) {
         int64_t f = s[1].toInt();
         if (f <= 0 || f > (int64_t(1) << 15)) throwErr("upscale_factor must be in 1..32768");
       }},
      {"aten::pixel_unshuffle", [](const torch::jit::Stack& s) {
         int64_t f = s[1].toInt();
         if (f <= 0 || f > (int64_t(1) << 15)) throwErr("downscale_factor must be in 1..32768");
       }},
      {"aten::adaptive_max_pool2d_backward", [](const torch::jit::Stack& s) {
         const auto& g = T(s, 0);
         const auto& x = T(s, 1);
         const auto& idx = T(s, 2);
         if (x.dim() < 3 || !g.sizes().equals(idx.sizes()) || g.dim() != x.dim() || g.size(0) != x.size(0) || (x.dim() == 4 && g.size(1) != x.size(1)))
           throwErr("grad_output and indices must have the pooled output's shape, with self's leading dimensions");
       }},
      {"aten::adaptive_max_pool3d_backward", [](const torch::jit::Stack& s) {
         const auto& g = T(s, 0);
         const auto& x = T(s, 1);
         const auto& idx = T(s, 2);
         if (x.dim() < 4 || !g.sizes().equals(idx.sizes()) || g.dim() != x.dim() || g.size(0) != x.size(0))
           throwErr("grad_output and indices must have the pooled output's shape, with self's leading dimensions");
       }},
      // The crashers the fuzzer found last (test/fixtures/crashers.ts): kernels of libtorch 1.13 that index, loop
      // or write on trust.
      {"aten::histogramdd", checkHistogramddBins},
      {"aten::_histogramdd_bin_edges", checkHistogramddBins},
      {"aten::_histogramdd_from_bin_cts", checkHistogramddBins},
      {"aten::_histogramdd_from_bin_tensors", checkHistogramddBins},
      {"aten::choose_qparams_optimized", [](const torch::jit::Stack& s) {
         const auto& x = T(s, 0);
         int64_t numel = s[1].toInt(), bins = s[2].toInt(), bits = s[4].toInt();
         double ratio = s[3].toDouble();
         if (numel != x.numel() || numel <= 0) throwErr("numel must equal input.numel() and be positive");
         if (bins <= 0 || bins > (int64_t(1) << 20)) throwErr("n_bins must be in 1..1048576");
         if (!(ratio > 0 && ratio <= 1)) throwErr("ratio must be in (0, 1]");
         if (bits < 1 || bits > 16) throwErr("bit_width must be in 1..16");
       }},
      {"aten::_convert_indices_from_coo_to_csr", [](const torch::jit::Stack& s) {
         const auto& idx = T(s, 0);
         int64_t size = s[1].toInt();
         if (size < 0) throwErr("size must be non-negative");
         if (idx.numel() > 0) {
           at::NoGradGuard ng;
           if (idx.min().item<int64_t>() < 0 || idx.max().item<int64_t>() >= size) throwErr("indices must lie in [0, size)");
         }
       }},
      {"aten::_convert_indices_from_csr_to_coo", [](const torch::jit::Stack& s) {
         const auto& crow = T(s, 0);
         const auto& col = T(s, 1);
         if (crow.dim() != 1 || col.dim() != 1 || crow.numel() < 1) throwErr("needs 1-D crow_indices (at least one entry) and 1-D col_indices");
         at::NoGradGuard ng;
         if (crow.index({0}).item<int64_t>() != 0 || crow.index({-1}).item<int64_t>() != col.numel() ||
             (crow.numel() > 1 && (crow.slice(0, 1).lt(crow.slice(0, 0, -1))).any().item<bool>()))
           throwErr("crow_indices must start at 0, never decrease and end at col_indices.numel()");
       }},
      {"aten::_local_scalar_dense", [](const torch::jit::Stack& s) {
         if (T(s, 0).numel() != 1) throwErr("needs a tensor with exactly one element");
       }},
      {"aten::_adaptive_avg_pool2d_backward", [](const torch::jit::Stack& s) { checkPoolBackward(s, 3, 4); }},
      {"aten::_adaptive_avg_pool3d_backward", [](const torch::jit::Stack& s) { checkPoolBackward(s, 4, 5); }},
      {"aten::_stack", [](const torch::jit::Stack& s) {
         auto list = s[0].toTensorList();
         if (list.empty()) throwErr("needs at least one tensor");
         const at::Tensor first = list.get(0);
         int64_t dim = s[1].toInt(), d = first.dim();
         if (dim < -(d + 1) || dim > d) throwErr("dim out of range");
         for (size_t i = 0; i < list.size(); ++i) {
           const at::Tensor t = list.get(i);
           if (!t.sizes().equals(first.sizes())) throwErr("all tensors must have the same shape");
           if (!t.is_contiguous()) throwErr("needs contiguous tensors (stack() accepts any)");
         }
       }},
      {"aten::binomial", [](const torch::jit::Stack& s) {
         at::NoGradGuard ng;
         const auto& count = T(s, 0);
         const auto& prob = T(s, 1);
         if (count.numel() > 0 && !(count.isfinite().all().item<bool>() && count.ge(0).all().item<bool>()))
           throwErr("count must be finite and non-negative");
         if (prob.numel() > 0 && !(prob.ge(0).all().item<bool>() && prob.le(1).all().item<bool>()))
           throwErr("prob must lie in [0, 1]");
       }},
      {"aten::_thnn_differentiable_lstm_cell_backward",
       refuse("is an autograd internal that libtorch 1.13 does not validate; use lstm_cell and backward()")},
      {"aten::_thnn_differentiable_gru_cell_backward",
       refuse("is an autograd internal that libtorch 1.13 does not validate; use gru_cell and backward()")},
      {"aten::_remove_batch_dim", refuse("is a functorch (vmap) internal, not callable on plain tensors")},
      {"aten::_add_batch_dim", refuse("is a functorch (vmap) internal, not callable on plain tensors")},
      {"aten::_new_zeros_with_same_feature_meta", refuse("is a forward-AD internal; use zeros_like")},
  };
  return g;
}

// The FFT internals index `dim` without wrapping or checking.
void checkFftDims(const torch::jit::Stack& s) {
  const auto& x = T(s, 0);
  for (auto d : s[1].toIntVector())
    if (d < 0 || d >= x.dim()) throwErr("dims must be in [0, " + std::to_string(x.dim()) + ") (the public fft functions accept negative dims)");
}

OpInfo* digest(const c10::OperatorHandle& h) {
  auto info = std::make_unique<OpInfo>(OpInfo{h, "", {}, {}});
  const auto& schema = h.schema();
  info->fullName = schema.name() + (schema.overload_name().empty() ? "" : "." + schema.overload_name());
  for (const auto& a : schema.arguments()) {
    bool opt;
    K k = kindOf(a.real_type(), opt);
    info->args.push_back(
        ArgInfo{a.name(), k, opt, a.N(), a.default_value(), a.kwarg_only(), writeSet(a.alias_info()).has_value()});
  }
  for (const auto& r : schema.returns()) {
    bool opt;
    K k = kindOf(r.real_type(), opt);
    int alias = -1;
    if (auto s = writeSet(r.alias_info())) {
      for (size_t i = 0; i < schema.arguments().size(); ++i) {
        auto as = writeSet(schema.arguments()[i].alias_info());
        if (as && *as == *s) {
          alias = static_cast<int>(i);
          break;
        }
      }
    }
    info->rets.push_back(RetInfo{k, opt, alias});
  }
  chooseFastPath(*info);
  const std::string& base = schema.name();
  auto it = guards().find(base);
  if (it != guards().end()) info->guard = it->second;
  if (base == "aten::_fft_r2c" || base == "aten::_fft_c2r" || base == "aten::_fft_c2c") info->guard = checkFftDims;
  if (info->guard) info->fast = Fast::None;
  g_ops.push_back(std::move(info));
  return g_ops.back().get();
}

// ---------------------------------------------------------------------------------------------------------------
// JS value → IValue, by schema kind

c10::Scalar toScalar(napi_env env, napi_value v, const char* what) {
  auto t = typeOf(env, v);
  if (t == napi_boolean) return c10::Scalar(getBool(env, v, what));
  if (t != napi_number) throwType(std::string(what) + " must be a number or boolean");
  double d = getNumber(env, v, what);
  // Integral JS numbers become integer Scalars so int tensors stay int (as Python's `t + 1`).
  if (d == d && d >= -9.007199254740992e15 && d <= 9.007199254740992e15 && d == static_cast<double>(static_cast<int64_t>(d)))
    return c10::Scalar(static_cast<int64_t>(d));
  return c10::Scalar(d);
}

// `int[2] stride` takes one value (broadcast, as in Python) or exactly N: kernels index N elements unchecked.
// `int[1] dim` is different: the 1 only says a lone int becomes a list, and any length is valid.
template <typename T>
std::vector<T> expandN(std::vector<T> v, const ArgInfo& a) {
  if (!a.N || *a.N < 2) return v;
  // An empty list is a valid sentinel where the schema's own default is empty (pooling: stride=[] means kernel).
  bool emptyOk = a.def && a.def->isList() && a.def->toListRef().empty();
  if (v.size() == 1) v.assign(*a.N, v[0]);
  else if (v.empty() && emptyOk) return v;
  else if (static_cast<int32_t>(v.size()) != *a.N)
    throwType("argument '" + a.name + "' needs " + std::to_string(*a.N) + " values (or one, repeated), got " + std::to_string(v.size()));
  return v;
}

// Dtypes JS may name: the plain numeric ones and complex. Quantized and sub-byte packed types (qint8, quint4x2, ...)
// have storage sizes that differ from numel·itemsize, which generic paths (fromBytes) would overrun.
at::ScalarType checkDtypeCode(int64_t code, const char* what) {
  // uint8 int8 int16 int32 int64 float16 float32 float64 | complex64 complex128 | bool | bfloat16
  static const bool allowed[16] = {1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1};
  if (code < 0 || code > 15 || !allowed[code]) throwType(std::string(what) + ": dtype code " + std::to_string(code) + " is not supported (use a numeric, bool or complex dtype)");
  return static_cast<at::ScalarType>(code);
}

c10::IValue convert(napi_env env, napi_value v, const ArgInfo& a) {
  const char* nm = a.name.c_str();
  if (a.kind == K::Tensor) {
    // Fast path: a handle is a number; anything else falls through to the checks below.
    int32_t h;
    if (asInt32(env, v, &h)) return c10::IValue(get(h));
    if (typeOf(env, v) == napi_number) throwType("argument '" + a.name + "': a tensor handle must be an integer");
  }
  if (isNullish(env, v)) {
    if (a.optional) return c10::IValue();
    if (a.kind == K::Generator) return c10::IValue();
    throwType("argument '" + a.name + "' (" + kindName(a.kind) + ") is required");
  }
  switch (a.kind) {
    case K::Tensor: return c10::IValue(get(getHandle(env, v, nm)));
    case K::TensorList: {
      uint32_t n = arrayLength(env, v, nm);
      std::vector<at::Tensor> ts;
      ts.reserve(n);
      for (uint32_t i = 0; i < n; ++i) ts.push_back(get(getHandle(env, element(env, v, i), nm)));
      return c10::IValue(c10::List<at::Tensor>(ts));
    }
    case K::OptTensorList: {
      uint32_t n = arrayLength(env, v, nm);
      c10::List<c10::optional<at::Tensor>> ts;
      for (uint32_t i = 0; i < n; ++i) {
        napi_value e = element(env, v, i);
        if (isNullish(env, e)) ts.push_back(c10::nullopt);
        else ts.push_back(get(getHandle(env, e, nm)));
      }
      return c10::IValue(ts);
    }
    case K::Int: return c10::IValue(getInt(env, v, nm));
    // Concrete SymInts travel as plain ints: the unboxing code accepts them on every torch version.
    case K::SymInt: return c10::IValue(getInt(env, v, nm));
    case K::IntList:
    case K::SymIntList: return c10::IValue(expandN(getIntList(env, v, nm), a));
    case K::Float: return c10::IValue(getNumber(env, v, nm));
    case K::FloatList: {
      std::vector<double> out;
      if (typeOf(env, v) == napi_number) out.push_back(getNumber(env, v, nm));
      else {
        uint32_t n = arrayLength(env, v, nm);
        for (uint32_t i = 0; i < n; ++i) out.push_back(getNumber(env, element(env, v, i), nm));
      }
      return c10::IValue(expandN(out, a));
    }
    case K::Bool: return c10::IValue(getBool(env, v, nm));
    case K::BoolList: {
      uint32_t n = arrayLength(env, v, nm);
      c10::List<bool> l;
      for (uint32_t i = 0; i < n; ++i) l.push_back(getBool(env, element(env, v, i), nm));
      if (a.N && static_cast<int32_t>(n) != *a.N)
        throwType("argument '" + a.name + "' must have " + std::to_string(*a.N) + " booleans");
      return c10::IValue(l);
    }
    case K::Scalar: return c10::IValue(toScalar(env, v, nm));
    case K::ScalarList: {
      uint32_t n = arrayLength(env, v, nm);
      std::vector<c10::Scalar> out;
      for (uint32_t i = 0; i < n; ++i) out.push_back(toScalar(env, element(env, v, i), nm));
      return c10::IValue(out);
    }
    case K::ScalarType: return c10::IValue(static_cast<int64_t>(checkDtypeCode(getInt(env, v, nm), a.name.c_str())));
    case K::Layout: {
      int64_t l = getInt(env, v, nm);
      if (l != 0) throwRange("argument '" + a.name + "': only the strided layout (0) is supported");
      return c10::IValue(l);
    }
    case K::MemoryFormat: {
      int64_t m = getInt(env, v, nm);
      if (m < 0 || m > 3) throwRange("argument '" + a.name + "': memory format must be 0..3");
      return c10::IValue(m);
    }
    case K::Device: return c10::IValue(c10::Device(getString(env, v, nm)));
    case K::String: return c10::IValue(getString(env, v, nm));
    case K::Generator: throwType("argument '" + a.name + "': explicit generators are not supported; pass null");
    default: throwType("argument '" + a.name + "' has a type this engine cannot pass from JS");
  }
}

napi_value fromIValue(napi_env env, c10::IValue&& v) {
  if (v.isNone()) return null(env);
  if (v.isTensor()) return tensorOrNull(env, std::move(v).toTensor());
  if (v.isTensorList()) {
    auto l = std::move(v).toTensorList();
    napi_value arr;
    ok(napi_create_array_with_length(env, l.size(), &arr));
    for (size_t i = 0; i < l.size(); ++i) ok(napi_set_element(env, arr, i, tensorOrNull(env, l.get(i))));
    return arr;
  }
  if (v.isInt()) return num(env, static_cast<double>(v.toInt()));
  if (v.isDouble()) return num(env, v.toDouble());
  if (v.isBool()) return boolean(env, v.toBool());
  if (v.isScalar()) {
    auto s = v.toScalar();
    if (s.isBoolean()) return boolean(env, s.toBool());
    if (s.isIntegral(false)) return num(env, static_cast<double>(s.toLong()));
    if (s.isFloatingPoint()) return num(env, s.toDouble());
    throwType("complex scalars cannot be returned to JS");
  }
  if (v.isSymInt()) return num(env, static_cast<double>(v.toSymInt().expect_int()));
  if (v.isIntList()) {
    auto l = v.toIntVector();
    napi_value arr;
    ok(napi_create_array_with_length(env, l.size(), &arr));
    for (size_t i = 0; i < l.size(); ++i) ok(napi_set_element(env, arr, i, num(env, static_cast<double>(l[i]))));
    return arr;
  }
  if (v.isString()) return str(env, v.toStringRef());
  if (v.isList()) {
    auto l = v.toList();
    napi_value arr;
    ok(napi_create_array_with_length(env, l.size(), &arr));
    for (size_t i = 0; i < l.size(); ++i) ok(napi_set_element(env, arr, i, fromIValue(env, c10::IValue(l.get(i)))));
    return arr;
  }
  if (v.isTuple()) {
    auto t = v.toTuple();
    napi_value arr;
    ok(napi_create_array_with_length(env, t->elements().size(), &arr));
    for (size_t i = 0; i < t->elements().size(); ++i)
      ok(napi_set_element(env, arr, i, fromIValue(env, c10::IValue(t->elements()[i]))));
    return arr;
  }
  if (v.isDevice()) return str(env, v.toDevice().str());
  throwType(std::string("cannot return a value of type ") + v.tagKind() + " to JS");
}

// ---------------------------------------------------------------------------------------------------------------
// Exports

napi_value FindOp(napi_env env, napi_callback_info info) {
  return Guard(env, "findOp", [&]() -> napi_value {
    Args a(env, info);
    a.need(2, "findOp");
    std::string name = getString(env, a[0], "name");
    std::string overload = getString(env, a[1], "overload");
    auto op = c10::Dispatcher::singleton().findOp(c10::OperatorName(name, overload));
    if (!op) throwType("no operator " + name + (overload.empty() ? "" : "." + overload) + " in this libtorch");
    digest(*op);
    return i32(env, static_cast<int32_t>(g_ops.size() - 1));
  });
}

const at::Tensor& fastTensor(napi_env env, napi_value v, const ArgInfo& a) {
  int32_t h;
  if (!asInt32(env, v, &h)) {
    if (isNullish(env, v)) throwType("argument '" + a.name + "' (Tensor) is required");
    if (typeOf(env, v) == napi_number) throwType("argument '" + a.name + "': a tensor handle must be an integer");
    throwType("argument '" + a.name + "' must be a Tensor");
  }
  return get(h);
}

c10::Scalar fastScalar(napi_env env, size_t n, napi_value* argv, const OpInfo& op, size_t i) {
  if (i < n && typeOf(env, argv[i]) != napi_undefined) return toScalar(env, argv[i], op.args[i].name.c_str());
  if (!op.args[i].def) throwType("argument '" + op.args[i].name + "' (Scalar) is required");
  return op.scalarDefaults[i];
}

napi_value callFast(napi_env env, OpInfo& op, size_t n, napi_value* argv) {
  auto arg = [&](size_t i) -> napi_value {
    if (i < n) return argv[i];
    napi_value u;
    ok(napi_get_undefined(env, &u));
    return u;
  };
  at::Tensor r;
  switch (op.fast) {
    case Fast::T: r = op.t->call(fastTensor(env, arg(0), op.args[0])); break;
    case Fast::TT: r = op.tt->call(fastTensor(env, arg(0), op.args[0]), fastTensor(env, arg(1), op.args[1])); break;
    case Fast::TS: r = op.ts->call(fastTensor(env, arg(0), op.args[0]), fastScalar(env, n, argv, op, 1)); break;
    case Fast::TTS:
      r = op.tts->call(fastTensor(env, arg(0), op.args[0]), fastTensor(env, arg(1), op.args[1]), fastScalar(env, n, argv, op, 2));
      break;
    case Fast::TSS:
      r = op.tss->call(fastTensor(env, arg(0), op.args[0]), fastScalar(env, n, argv, op, 1), fastScalar(env, n, argv, op, 2));
      break;
    default: throwErr("internal: no fast path");
  }
  napi_value out = tensorOrNull(env, std::move(r));
  flushExternal(env, false);
  return out;
}

// call(opId, ...args): the generic entry point. Arguments are positional in schema order; undefined means the
// schema default. Returns one value, an array for several returns, or undefined when every return aliases an input.
napi_value Call(napi_env env, napi_callback_info info) {
  size_t argc = 24;
  napi_value argvBuf[24];
  napi_value* argv = argvBuf;
  napi_status s = napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  // Ops with 24+ arguments exist (e.g. _cudnn_rnn_backward.out has 26): fetch them all, never read past a buffer.
  std::vector<napi_value> argvBig;
  if (s == napi_ok && argc > 24) {
    argvBig.resize(argc);
    s = napi_get_cb_info(env, info, &argc, argvBig.data(), nullptr, nullptr);
    argv = argvBig.data();
  }
  if (s != napi_ok || argc < 1) {
    throwJs(env, JsErrKind::TypeError, "call(opId, ...args): missing op id");
    return nullptr;
  }
  int32_t id = -1;
  if (!asInt32(env, argv[0], &id) || id < 0 || static_cast<size_t>(id) >= g_ops.size()) {
    throwJs(env, JsErrKind::TypeError, "call: invalid op id");
    return nullptr;
  }
  OpInfo& op = *g_ops[id];
  return Guard(env, op.fullName.c_str(), [&]() -> napi_value {
    if (op.fast != Fast::None && argc - 1 <= op.args.size()) return callFast(env, op, argc - 1, argv + 1);
    size_t nargs = op.args.size();
    if (argc - 1 > nargs)
      throwType("expects at most " + std::to_string(nargs) + " arguments, got " + std::to_string(argc - 1));
    // Reused stacks, one per nesting depth: a fresh std::vector per call was a measurable share of a tiny op's
    // cost, and a JS getter that runs during argument conversion may call the engine again (re-entrancy).
    static std::vector<std::unique_ptr<torch::jit::Stack>> stacks;
    static size_t depth = 0;
    if (depth == stacks.size()) stacks.push_back(std::make_unique<torch::jit::Stack>());
    torch::jit::Stack& stack = *stacks[depth];
    struct Leave {
      torch::jit::Stack& s;
      size_t& d;
      ~Leave() {
        s.clear();  // do not keep argument tensors alive until the next call
        --d;
      }
    } leave{stack, ++depth};
    stack.clear();
    for (size_t i = 0; i < nargs; ++i) {
      const ArgInfo& ai = op.args[i];
      if (i + 1 < argc && (ai.kind == K::Tensor || typeOf(env, argv[i + 1]) != napi_undefined)) {
        stack.push_back(convert(env, argv[i + 1], ai));
      } else if (ai.def) {
        stack.push_back(*ai.def);
      } else if (ai.optional || ai.kind == K::Generator) {
        stack.push_back(c10::IValue());
      } else {
        throwType("argument '" + ai.name + "' (" + kindName(ai.kind) + ") is required");
      }
    }
    if (op.guard) op.guard(stack);
    op.handle.callBoxed(&stack);
    size_t nret = stack.size();
    napi_value result;
    if (nret == 1) {
      result = op.rets[0].aliasArg >= 0 ? undef(env) : fromIValue(env, std::move(stack[0]));
    } else if (nret == 0) {
      result = undef(env);
    } else {
      ok(napi_create_array_with_length(env, nret, &result));
      for (size_t i = 0; i < nret; ++i) {
        napi_value e = (i < op.rets.size() && op.rets[i].aliasArg >= 0) ? undef(env) : fromIValue(env, std::move(stack[i]));
        ok(napi_set_element(env, result, i, e));
      }
    }
    flushExternal(env, false);
    return result;
  });
}

// Schema listing for the code generator: [[name, overload, schemaString, [[argName, kind, optional, N, hasDefault,
// kwargOnly, write], ...], [[retKind, optional, aliasArg], ...]], ...]
napi_value ListOps(napi_env env, napi_callback_info info) {
  return Guard(env, "listOps", [&]() -> napi_value {
    auto names = c10::Dispatcher::singleton().getAllOpNames();
    napi_value arr;
    ok(napi_create_array(env, &arr));
    uint32_t idx = 0;
    for (const auto& n : names) {
      auto h = c10::Dispatcher::singleton().findOp(n);
      if (!h || !h->hasSchema()) continue;
      const auto& schema = h->schema();
      napi_value row, args, rets;
      ok(napi_create_array(env, &row));
      ok(napi_set_element(env, row, 0, str(env, n.name)));
      ok(napi_set_element(env, row, 1, str(env, n.overload_name)));
      std::ostringstream ss;
      ss << schema;
      ok(napi_set_element(env, row, 2, str(env, ss.str())));
      ok(napi_create_array(env, &args));
      uint32_t j = 0;
      for (const auto& a : schema.arguments()) {
        bool opt;
        K k = kindOf(a.real_type(), opt);
        napi_value ar;
        ok(napi_create_array(env, &ar));
        ok(napi_set_element(env, ar, 0, str(env, a.name())));
        ok(napi_set_element(env, ar, 1, str(env, kindName(k))));
        ok(napi_set_element(env, ar, 2, boolean(env, opt)));
        ok(napi_set_element(env, ar, 3, a.N() ? num(env, *a.N()) : null(env)));
        ok(napi_set_element(env, ar, 4, boolean(env, a.default_value().has_value())));
        ok(napi_set_element(env, ar, 5, boolean(env, a.kwarg_only())));
        ok(napi_set_element(env, ar, 6, boolean(env, writeSet(a.alias_info()).has_value())));
        ok(napi_set_element(env, ar, 7, str(env, a.real_type()->str())));
        ok(napi_set_element(env, args, j++, ar));
      }
      ok(napi_set_element(env, row, 3, args));
      ok(napi_create_array(env, &rets));
      j = 0;
      for (const auto& r : schema.returns()) {
        bool opt;
        K k = kindOf(r.real_type(), opt);
        int alias = -1;
        if (auto s = writeSet(r.alias_info())) {
          for (size_t i = 0; i < schema.arguments().size(); ++i) {
            auto as = writeSet(schema.arguments()[i].alias_info());
            if (as && *as == *s) {
              alias = static_cast<int>(i);
              break;
            }
          }
        }
        napi_value rr;
        ok(napi_create_array(env, &rr));
        ok(napi_set_element(env, rr, 0, str(env, kindName(k))));
        ok(napi_set_element(env, rr, 1, boolean(env, opt)));
        ok(napi_set_element(env, rr, 2, num(env, alias)));
        ok(napi_set_element(env, rets, j++, rr));
      }
      ok(napi_set_element(env, row, 4, rets));
      ok(napi_set_element(env, arr, idx++, row));
    }
    return arr;
  });
}

napi_value Release(napi_env env, napi_callback_info info) {
  return Guard(env, "dispose", [&]() -> napi_value {
    Args a(env, info);
    a.need(1, "release");
    int32_t h;
    if (!asInt32(env, a[0], &h)) throwType("release: a tensor handle must be an integer");
    release(h);
    flushExternal(env, false);
    return nullptr;
  });
}

// releaseMany(Int32Array): one crossing for a whole tidy scope.
napi_value ReleaseMany(napi_env env, napi_callback_info info) {
  return Guard(env, "dispose", [&]() -> napi_value {
    Args a(env, info);
    a.need(2, "releaseMany");
    bool isTa = false;
    ok(napi_is_typedarray(env, a[0], &isTa));
    if (!isTa) throwType("releaseMany expects an Int32Array");
    napi_typedarray_type tt;
    size_t len;
    void* data;
    ok(napi_get_typedarray_info(env, a[0], &tt, &len, &data, nullptr, nullptr));
    if (tt != napi_int32_array) throwType("releaseMany expects an Int32Array");
    uint32_t n;
    ok(napi_get_value_uint32(env, a[1], &n));
    if (n > len) throwRange("count exceeds array length");
    auto* hs = static_cast<int32_t*>(data);
    for (uint32_t i = 0; i < n; ++i) release(hs[i]);
    flushExternal(env, false);
    return nullptr;
  });
}

napi_value LiveCount(napi_env env, napi_callback_info) {
  return Guard(env, "liveTensors", [&]() -> napi_value { return num(env, static_cast<double>(g_live)); });
}

napi_value Clone(napi_env env, napi_callback_info info) {
  // A second handle to the same tensor (same TensorImpl, shared autograd identity).
  return Guard(env, "share", [&]() -> napi_value {
    Args a(env, info);
    a.need(1, "share");
    return i32(env, put(get(getHandle(env, a[0], "tensor"))));
  });
}

// --- metadata

napi_value Meta(napi_env env, napi_callback_info info) {
  // [dtype, device, requiresGrad, ...shape]: one crossing for what the Tensor wrapper needs most.
  return Guard(env, "meta", [&]() -> napi_value {
    Args a(env, info);
    a.need(1, "meta");
    const at::Tensor& t = get(getHandle(env, a[0], "tensor"));
    napi_value arr;
    auto sizes = t.sizes();
    ok(napi_create_array_with_length(env, sizes.size(), &arr));
    for (size_t i = 0; i < sizes.size(); ++i) ok(napi_set_element(env, arr, i, num(env, static_cast<double>(sizes[i]))));
    return arr;
  });
}

napi_value Shape(napi_env env, napi_callback_info info) { return Meta(env, info); }

napi_value Strides(napi_env env, napi_callback_info info) {
  return Guard(env, "strides", [&]() -> napi_value {
    Args a(env, info);
    a.need(1, "strides");
    const at::Tensor& t = get(getHandle(env, a[0], "tensor"));
    napi_value arr;
    auto st = t.strides();
    ok(napi_create_array_with_length(env, st.size(), &arr));
    for (size_t i = 0; i < st.size(); ++i) ok(napi_set_element(env, arr, i, num(env, static_cast<double>(st[i]))));
    return arr;
  });
}

napi_value Dtype(napi_env env, napi_callback_info info) {
  return Guard(env, "dtype", [&]() -> napi_value {
    Args a(env, info);
    a.need(1, "dtype");
    return i32(env, static_cast<int32_t>(get(getHandle(env, a[0], "tensor")).scalar_type()));
  });
}

napi_value DeviceOf(napi_env env, napi_callback_info info) {
  return Guard(env, "device", [&]() -> napi_value {
    Args a(env, info);
    a.need(1, "device");
    return str(env, get(getHandle(env, a[0], "tensor")).device().str());
  });
}

napi_value Dim(napi_env env, napi_callback_info info) {
  return Guard(env, "dim", [&]() -> napi_value {
    Args a(env, info);
    a.need(1, "dim");
    return i32(env, static_cast<int32_t>(get(getHandle(env, a[0], "tensor")).dim()));
  });
}

napi_value Numel(napi_env env, napi_callback_info info) {
  return Guard(env, "numel", [&]() -> napi_value {
    Args a(env, info);
    a.need(1, "numel");
    return num(env, static_cast<double>(get(getHandle(env, a[0], "tensor")).numel()));
  });
}

napi_value Item(napi_env env, napi_callback_info info) {
  return Guard(env, "item", [&]() -> napi_value {
    Args a(env, info);
    a.need(1, "item");
    const at::Tensor& t = get(getHandle(env, a[0], "tensor"));
    if (t.numel() != 1)
      throwRange("item() needs a tensor with one element, this one has " + std::to_string(t.numel()));
    auto s = t.item();
    if (s.isBoolean()) return boolean(env, s.toBool());
    if (s.isIntegral(false)) return num(env, static_cast<double>(s.toLong()));
    if (s.isComplex()) throwType("item() of a complex tensor is not supported");
    return num(env, s.toDouble());
  });
}

// --- data in and out

size_t elementSizeOf(at::ScalarType st) { return c10::elementSize(st); }

// fromBytes(buffer|typedArray, dtypeCode, shape): copies the bytes into a new CPU tensor.
napi_value FromBytes(napi_env env, napi_callback_info info) {
  return Guard(env, "fromBytes", [&]() -> napi_value {
    Args a(env, info);
    a.need(3, "fromBytes");
    void* data = nullptr;
    size_t byteLen = 0;
    bool isTa = false, isAb = false, isBuf = false;
    ok(napi_is_typedarray(env, a[0], &isTa));
    ok(napi_is_arraybuffer(env, a[0], &isAb));
    ok(napi_is_buffer(env, a[0], &isBuf));
    if (isTa) {
      napi_typedarray_type tt;
      size_t len;
      size_t off;
      napi_value ab;
      ok(napi_get_typedarray_info(env, a[0], &tt, &len, &data, &ab, &off));
      size_t es = 1;
      switch (tt) {
        case napi_int16_array: case napi_uint16_array: es = 2; break;
        case napi_int32_array: case napi_uint32_array: case napi_float32_array: es = 4; break;
        case napi_float64_array: case napi_bigint64_array: case napi_biguint64_array: es = 8; break;
        default: es = 1;
      }
      byteLen = len * es;
    } else if (isAb) {
      ok(napi_get_arraybuffer_info(env, a[0], &data, &byteLen));
    } else if (isBuf) {
      ok(napi_get_buffer_info(env, a[0], &data, &byteLen));
    } else {
      throwType("data must be a TypedArray, Buffer or ArrayBuffer");
    }
    auto st = checkDtypeCode(getInt(env, a[1], "dtype"), "dtype");
    auto shape = getIntList(env, a[2], "shape");
    int64_t n = 1;
    for (auto d : shape) {
      if (d < 0) throwRange("shape entries must be non-negative");
      n *= d;
    }
    size_t need = static_cast<size_t>(n) * elementSizeOf(st);
    if (need != byteLen)
      throwRange("data has " + std::to_string(byteLen) + " bytes but shape and dtype need " + std::to_string(need));
    auto t = at::empty(shape, at::TensorOptions().dtype(st));
    if (need) std::memcpy(t.data_ptr(), data, need);
    return i32(env, put(std::move(t)));
  });
}

// toBytes(h): a fresh ArrayBuffer holding the tensor's elements in row-major order (copied to CPU, contiguous).
napi_value ToBytes(napi_env env, napi_callback_info info) {
  return Guard(env, "toBytes", [&]() -> napi_value {
    Args a(env, info);
    a.need(1, "toBytes");
    at::Tensor t = get(getHandle(env, a[0], "tensor"));
    {
      at::NoGradGuard ng;
      t = t.detach().to(at::kCPU).contiguous();
    }
    size_t n = static_cast<size_t>(t.numel()) * t.element_size();
    void* out;
    napi_value ab;
    ok(napi_create_arraybuffer(env, n, &out, &ab));
    if (n) std::memcpy(out, t.data_ptr(), n);
    return ab;
  });
}

// "EFBIG (File too large)": the code name first, as Node reports file errors.
std::string errnoText(int e) {
  const char* name = ::strerrorname_np(e);
  return std::string(name ? name : "E?") + " (" + std::strerror(e) + ")";
}

// readInto(h, fd, position) / writeFrom(h, fd, position): file I/O straight between a file descriptor and a
// contiguous CPU tensor's memory, with no JS buffer aliasing tensor memory (which resize_ or set_ could free).
napi_value ReadInto(napi_env env, napi_callback_info info) {
  return Guard(env, "readInto", [&]() -> napi_value {
    Args a(env, info);
    a.need(3, "readInto");
    at::Tensor& t = get(getHandle(env, a[0], "tensor"));
    if (!t.device().is_cpu() || !t.is_contiguous()) throwType("readInto needs a contiguous CPU tensor");
    int fd = static_cast<int>(getInt(env, a[1], "fd"));
    int64_t pos = getInt(env, a[2], "position");
    if (pos < 0) throwRange("position must be non-negative");
    auto* dst = static_cast<char*>(t.data_ptr());
    size_t n = static_cast<size_t>(t.numel()) * t.element_size();
    size_t done = 0;
    while (done < n) {
      ssize_t r = ::pread(fd, dst + done, std::min<size_t>(n - done, size_t(1) << 30), static_cast<off_t>(pos + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        throwErr(std::string("read failed: ") + errnoText(errno));
      }
      if (r == 0) throwErr("the file ended at byte " + std::to_string(pos + done) + " while reading (was it truncated?)");
      done += static_cast<size_t>(r);
    }
    return num(env, static_cast<double>(done));
  });
}

napi_value WriteFrom(napi_env env, napi_callback_info info) {
  return Guard(env, "writeFrom", [&]() -> napi_value {
    Args a(env, info);
    a.need(3, "writeFrom");
    at::Tensor& t = get(getHandle(env, a[0], "tensor"));
    if (!t.device().is_cpu() || !t.is_contiguous()) throwType("writeFrom needs a contiguous CPU tensor");
    int fd = static_cast<int>(getInt(env, a[1], "fd"));
    int64_t pos = getInt(env, a[2], "position");
    if (pos < 0) throwRange("position must be non-negative");
    const auto* src = static_cast<const char*>(t.data_ptr());
    size_t n = static_cast<size_t>(t.numel()) * t.element_size();
    size_t done = 0;
    while (done < n) {
      ssize_t w = ::pwrite(fd, src + done, std::min<size_t>(n - done, size_t(1) << 30), static_cast<off_t>(pos + done));
      if (w < 0) {
        if (errno == EINTR) continue;
        throwErr(std::string("write failed: ") + errnoText(errno));
      }
      done += static_cast<size_t>(w);
    }
    return num(env, static_cast<double>(done));
  });
}

// --- autograd

napi_value Backward(napi_env env, napi_callback_info info) {
  return Guard(env, "backward", [&]() -> napi_value {
    Args a(env, info);
    a.need(1, "backward");
    std::vector<at::Tensor> outs, grads;
    uint32_t n = arrayLength(env, a[0], "tensors");
    for (uint32_t i = 0; i < n; ++i) outs.push_back(get(getHandle(env, element(env, a[0], i), "tensors")));
    if (a.argc > 1 && !isNullish(env, a[1])) {
      uint32_t m = arrayLength(env, a[1], "gradients");
      if (m != n) throwRange("backward: " + std::to_string(n) + " tensors but " + std::to_string(m) + " gradients");
      for (uint32_t i = 0; i < m; ++i) {
        napi_value e = element(env, a[1], i);
        grads.push_back(isNullish(env, e) ? at::Tensor() : get(getHandle(env, e, "gradients")));
      }
    }
    c10::optional<bool> retain;
    if (a.argc > 2 && !isNullish(env, a[2])) retain = getBool(env, a[2], "retainGraph");
    bool create = a.argc > 3 && !isNullish(env, a[3]) ? getBool(env, a[3], "createGraph") : false;
    for (size_t i = 0; i < outs.size(); ++i) {
      if (!outs[i].requires_grad())
        throwErr("element " + std::to_string(i) + " of tensors does not require grad and does not have a grad_fn");
      if ((grads.empty() || !grads[i].defined()) && outs[i].numel() != 1)
        throwErr("grad can be implicitly created only for scalar outputs; pass a gradient for a tensor of shape " +
                 c10::str(outs[i].sizes()));
    }
    torch::autograd::backward(outs, grads, retain, create);
    return nullptr;
  });
}

napi_value Grad(napi_env env, napi_callback_info info) {
  return Guard(env, "grad", [&]() -> napi_value {
    Args a(env, info);
    a.need(1, "grad");
    return tensorOrNull(env, get(getHandle(env, a[0], "tensor")).grad());
  });
}

napi_value SetGrad(napi_env env, napi_callback_info info) {
  return Guard(env, "setGrad", [&]() -> napi_value {
    Args a(env, info);
    a.need(2, "setGrad");
    at::Tensor& t = get(getHandle(env, a[0], "tensor"));
    if (isNullish(env, a[1])) {
      t.mutable_grad() = at::Tensor();
      return nullptr;
    }
    const at::Tensor& g = get(getHandle(env, a[1], "grad"));
    if (!g.sizes().equals(t.sizes()))
      throwRange("assigned grad has shape " + c10::str(g.sizes()) + " but the tensor has shape " + c10::str(t.sizes()));
    if (g.scalar_type() != t.scalar_type() || g.device() != t.device())
      throwType("assigned grad must have the tensor's dtype and device");
    t.mutable_grad() = g;
    return nullptr;
  });
}

napi_value RequiresGrad(napi_env env, napi_callback_info info) {
  return Guard(env, "requiresGrad", [&]() -> napi_value {
    Args a(env, info);
    a.need(1, "requiresGrad");
    at::Tensor& t = get(getHandle(env, a[0], "tensor"));
    if (a.argc > 1 && !isNullish(env, a[1])) {
      bool r = getBool(env, a[1], "requiresGrad");
      if (r && !(at::isFloatingType(t.scalar_type()) || at::isComplexType(t.scalar_type())))
        throwType("only floating point tensors can require gradients (dtype is " +
                  std::string(c10::toString(t.scalar_type())) + ")");
      if (!r && !t.is_leaf())
        throwErr("requiresGrad(false) on a non-leaf tensor; use detach() instead");
      t.set_requires_grad(r);
    }
    return boolean(env, t.requires_grad());
  });
}

napi_value IsLeaf(napi_env env, napi_callback_info info) {
  return Guard(env, "isLeaf", [&]() -> napi_value {
    Args a(env, info);
    a.need(1, "isLeaf");
    return boolean(env, get(getHandle(env, a[0], "tensor")).is_leaf());
  });
}

napi_value GradFn(napi_env env, napi_callback_info info) {
  return Guard(env, "gradFn", [&]() -> napi_value {
    Args a(env, info);
    a.need(1, "gradFn");
    const auto& fn = get(getHandle(env, a[0], "tensor")).grad_fn();
    if (!fn) return null(env);
    return str(env, fn->name());
  });
}

napi_value RetainGrad(napi_env env, napi_callback_info info) {
  return Guard(env, "retainGrad", [&]() -> napi_value {
    Args a(env, info);
    a.need(1, "retainGrad");
    get(getHandle(env, a[0], "tensor")).retain_grad();
    return nullptr;
  });
}

napi_value GradEnabled(napi_env env, napi_callback_info info) {
  return Guard(env, "gradEnabled", [&]() -> napi_value {
    Args a(env, info);
    bool prev = at::GradMode::is_enabled();
    if (a.argc > 0 && !isNullish(env, a[0])) at::GradMode::set_enabled(getBool(env, a[0], "enabled"));
    return boolean(env, prev);
  });
}

// Inference mode is a RAII guard in C++; JS scopes are strictly nested, so a stack of heap guards works.
std::vector<std::unique_ptr<c10::InferenceMode>> g_inference;

napi_value EnterInference(napi_env env, napi_callback_info) {
  return Guard(env, "inferenceMode", [&]() -> napi_value {
    g_inference.push_back(std::make_unique<c10::InferenceMode>(true));
    return i32(env, static_cast<int32_t>(g_inference.size()));
  });
}

napi_value ExitInference(napi_env env, napi_callback_info) {
  return Guard(env, "inferenceMode", [&]() -> napi_value {
    if (g_inference.empty()) throwErr("exitInference without enterInference");
    g_inference.pop_back();
    return nullptr;
  });
}

napi_value IsInference(napi_env env, napi_callback_info info) {
  return Guard(env, "isInference", [&]() -> napi_value {
    Args a(env, info);
    a.need(1, "isInference");
    return boolean(env, get(getHandle(env, a[0], "tensor")).is_inference());
  });
}

// autocast(enabled, dtypeCode): CUDA autocast on or off (mixed precision in bf16 or f16). Returns whether it was on.
// Leaving the outermost region clears the cast cache, as torch.autocast's __exit__ does.
napi_value Autocast(napi_env env, napi_callback_info info) {
  return Guard(env, "autocast", [&]() -> napi_value {
    Args a(env, info);
    a.need(2, "autocast");
    bool enable = getBool(env, a[0], "enabled");
    int64_t code = getInt(env, a[1], "dtype");
    if (code != static_cast<int64_t>(at::kBFloat16) && code != static_cast<int64_t>(at::kHalf))
      throwType("autocast dtype must be bfloat16 or float16");
#if TORCH_VERSION_MAJOR >= 2 && TORCH_VERSION_MINOR >= 4
    bool prev = at::autocast::is_autocast_enabled(at::kCUDA);
    at::autocast::set_autocast_dtype(at::kCUDA, static_cast<at::ScalarType>(code));
    at::autocast::set_autocast_enabled(at::kCUDA, enable);
#else
    bool prev = at::autocast::is_enabled();
    at::autocast::set_autocast_gpu_dtype(static_cast<at::ScalarType>(code));
    at::autocast::set_enabled(enable);
#endif
    if (enable) at::autocast::increment_nesting();
    else if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    return boolean(env, prev);
  });
}

// --- runtime settings

napi_value ManualSeed(napi_env env, napi_callback_info info) {
  return Guard(env, "manualSeed", [&]() -> napi_value {
    Args a(env, info);
    a.need(1, "manualSeed");
    int64_t seed = getInt(env, a[0], "seed");
    at::manual_seed(static_cast<uint64_t>(seed));
    return nullptr;
  });
}

// RNG state of the CPU generator as a uint8 tensor handle (for exact resume), and setting it back.
napi_value GetRngState(napi_env env, napi_callback_info) {
  return Guard(env, "getRngState", [&]() -> napi_value {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    return i32(env, put(gen.get_state()));
  });
}

napi_value SetRngState(napi_env env, napi_callback_info info) {
  return Guard(env, "setRngState", [&]() -> napi_value {
    Args a(env, info);
    a.need(1, "setRngState");
    const at::Tensor& s = get(getHandle(env, a[0], "state"));
    if (s.scalar_type() != at::kByte || !s.device().is_cpu()) throwType("RNG state must be a CPU uint8 tensor");
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(s);
    return nullptr;
  });
}

napi_value NumThreads(napi_env env, napi_callback_info info) {
  return Guard(env, "numThreads", [&]() -> napi_value {
    Args a(env, info);
    if (a.argc > 0 && !isNullish(env, a[0])) {
      int64_t n = getInt(env, a[0], "threads");
      if (n < 1) throwRange("thread count must be at least 1");
      at::set_num_threads(static_cast<int>(n));
    }
    return i32(env, at::get_num_threads());
  });
}

napi_value CudaInfo(napi_env env, napi_callback_info) {
  return Guard(env, "cudaInfo", [&]() -> napi_value {
    // DeviceGuardImpl's deviceCount() exists on every torch version; it is only registered when CUDA is linked.
    if (!at::hasCUDA()) return i32(env, 0);
    return i32(env, static_cast<int32_t>(c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->deviceCount()));
  });
}

// CUDA helpers exist only in CUDA builds; elsewhere they report that CUDA is absent.
napi_value CudaSynchronize(napi_env env, napi_callback_info) {
  return Guard(env, "cudaSynchronize", [&]() -> napi_value {
#ifdef RETAIN_CUDA
    c10::cuda::device_synchronize();
    return nullptr;
#else
    throwErr("this build has no CUDA (rebuild with TORCH_PYTHON pointing at a CUDA PyTorch)");
#endif
  });
}

// [allocated bytes now, peak allocated, reserved now] for device 0..n; emptyCache with a truthy argument.
napi_value CudaMemory(napi_env env, napi_callback_info info) {
  return Guard(env, "cudaMemory", [&]() -> napi_value {
#ifdef RETAIN_CUDA
    Args a(env, info);
    int dev = a.argc > 0 && !isNullish(env, a[0]) ? static_cast<int>(getInt(env, a[0], "device")) : 0;
    if (a.argc > 1 && !isNullish(env, a[1]) && getBool(env, a[1], "emptyCache")) c10::cuda::CUDACachingAllocator::emptyCache();
    if (a.argc > 2 && !isNullish(env, a[2]) && getBool(env, a[2], "resetPeak")) c10::cuda::CUDACachingAllocator::resetPeakStats(dev);
    auto st = c10::cuda::CUDACachingAllocator::getDeviceStats(dev);
    napi_value arr;
    ok(napi_create_array_with_length(env, 3, &arr));
    ok(napi_set_element(env, arr, 0, num(env, static_cast<double>(st.allocated_bytes[0].current))));
    ok(napi_set_element(env, arr, 1, num(env, static_cast<double>(st.allocated_bytes[0].peak))));
    ok(napi_set_element(env, arr, 2, num(env, static_cast<double>(st.reserved_bytes[0].current))));
    return arr;
#else
    (void)info;
    throwErr("this build has no CUDA (rebuild with TORCH_PYTHON pointing at a CUDA PyTorch)");
#endif
  });
}

napi_value Version(napi_env env, napi_callback_info) {
  return Guard(env, "version", [&]() -> napi_value {
#ifdef TORCH_VERSION_MAJOR
    return str(env, std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
                        std::to_string(TORCH_VERSION_PATCH));
#else
    return str(env, "unknown");
#endif
  });
}

// gcOwned(h): the tensor is now the garbage collector's to free; report its storage to V8 (once per handle).
napi_value GcOwned(napi_env env, napi_callback_info info) {
  return Guard(env, "gcOwned", [&]() -> napi_value {
    size_t argc = 1;
    napi_value argv[1];
    ok(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
    if (argc < 1) throwType("gcOwned(handle)");
    int32_t h = getHandle(env, argv[0], "handle");
    const at::Tensor& t = get(h);
    if (g_reported[h] == 0) {
      g_reported[h] = storageBytes(t);
      g_pendingExternal += g_reported[h];
      flushExternal(env, false);
    }
    return undef(env);
  });
}

napi_value ExternalBytes(napi_env env, napi_callback_info) {
  return Guard(env, "externalBytes", [&]() -> napi_value {
    flushExternal(env, true);
    return num(env, static_cast<double>(g_reportedExternal));
  });
}

#include "fused.h"

napi_value Init(napi_env env, napi_value exports) {
  struct Fn {
    const char* name;
    napi_callback cb;
  };
  Fn fns[] = {
      {"findOp", FindOp},         {"call", Call},
      {"listOps", ListOps},       {"release", Release},
      {"releaseMany", ReleaseMany}, {"liveCount", LiveCount},
      {"share", Clone},           {"shape", Shape},
      {"strides", Strides},       {"dtype", Dtype},
      {"device", DeviceOf},       {"dim", Dim},
      {"numel", Numel},           {"item", Item},
      {"fromBytes", FromBytes},   {"toBytes", ToBytes},
        {"backward", Backward},
      {"grad", Grad},             {"setGrad", SetGrad},
      {"requiresGrad", RequiresGrad}, {"isLeaf", IsLeaf},
      {"gradFn", GradFn},         {"retainGrad", RetainGrad},
      {"gradEnabled", GradEnabled}, {"enterInference", EnterInference},
      {"exitInference", ExitInference}, {"isInference", IsInference},
      {"manualSeed", ManualSeed}, {"getRngState", GetRngState},
      {"setRngState", SetRngState}, {"numThreads", NumThreads},
      {"cudaDeviceCount", CudaInfo}, {"version", Version},
      {"externalBytes", ExternalBytes}, {"gcOwned", GcOwned}, {"linear", Linear}, {"rmsNorm", RmsNorm}, {"cudaSynchronize", CudaSynchronize},
      {"cudaMemory", CudaMemory}, {"readInto", ReadInto}, {"writeFrom", WriteFrom}, {"autocast", Autocast},
  };
  for (const auto& f : fns) {
    napi_value fn;
    if (napi_create_function(env, f.name, NAPI_AUTO_LENGTH, f.cb, nullptr, &fn) != napi_ok) return nullptr;
    if (napi_set_named_property(env, exports, f.name, fn) != napi_ok) return nullptr;
  }
  retain::registerDistributed(env, exports);
  return exports;
}

}  // namespace

// The bridge declared in engine.h, for dist.cc.
namespace retain {
at::Tensor& tensorAt(int32_t handle) { return get(handle); }
int32_t adoptTensor(at::Tensor t) { return put(std::move(t)); }
napi_value guarded(napi_env env, const char* ctx, const std::function<napi_value()>& f) { return Guard(env, ctx, f); }
}  // namespace retain

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
