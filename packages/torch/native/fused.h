// Fused CPU paths for the layers a transformer step spends its time in: nn.Linear on oneDNN's GEMM and RMSNorm with
// a hand-written backward. Included by engine.cc inside its anonymous namespace (it uses the handle table and
// Guard); not a separate translation unit.
//
// Linear.
// libtorch 1.13 sends x·Wᵀ to the BLAS it was built with (OpenBLAS here), whose kernel choice depends on how well
// that OpenBLAS knows the CPU. The same libtorch also carries oneDNN (libdnnl.so.2, loaded as a dependency of
// libtorch_cpu), whose `dnnl_sgemm` JIT-compiles for the CPU it runs on. linear() below computes the forward and both
// backward products with it, as a custom autograd Function (LinearBackward in a graph) with the same maths as
// aten::linear: y = x·Wᵀ + b, dx = dy·W, dW = dyᵀ·x, db = Σ dy. Summation order differs from OpenBLAS's, so results
// agree to float32 rounding, not bit for bit.
//
// Anything else (other dtypes or devices, a 1-D weight, a double backward with create_graph) goes to aten::linear, as
// does everything when libdnnl cannot be found or RETAIN_DNNL_LINEAR=0.

// Needs <dlfcn.h> and <torch/csrc/autograd/custom_function.h>, included at the top of engine.cc.

using DnnlSgemmFn = int (*)(char, char, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                            float, float*, int64_t);

DnnlSgemmFn dnnlSgemm() {
  static DnnlSgemmFn fn = []() -> DnnlSgemmFn {
    const char* env = std::getenv("RETAIN_DNNL_LINEAR");
    if (env && std::string(env) == "0") return nullptr;
    // libtorch_cpu loaded it already (RTLD_NOLOAD: never load a second copy); RTLD_DEFAULT would not see it, since
    // Node opens addons with local symbol scope.
    void* lib = dlopen("libdnnl.so.2", RTLD_NOW | RTLD_NOLOAD);
    if (!lib) lib = dlopen("libdnnl.so", RTLD_NOW | RTLD_NOLOAD);
    return lib ? reinterpret_cast<DnnlSgemmFn>(dlsym(lib, "dnnl_sgemm")) : nullptr;
  }();
  return fn;
}

// A signal handled on a thread while Debian's libdnnl runs its AVX-512 sgemm kernel there corrupts the heap: about 1
// in 20 SIGINTs sent during training ended in glibc's "corrupted size vs. prev_size" inside dnnl_sgemm (seen under
// gdb), none in 120 with DNNL_MAX_CPU_ISA=AVX2 or with RETAIN_DNNL_LINEAR=0. Node handles SIGINT/SIGTERM/SIGUSR1
// (a run's preemption), SIGCHLD and others on whatever thread the kernel picks, so asynchronous signals are held
// back on the calling thread for the call (they are delivered right after it), and for good on the intra-op worker
// threads, which never need one. Synchronous faults stay deliverable.
sigset_t asyncSignals() {
  sigset_t s;
  sigfillset(&s);
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS}) sigdelset(&s, sig);
  return s;
}

class HoldSignals {
 public:
  HoldSignals() {
    static const sigset_t held = asyncSignals();
    pthread_sigmask(SIG_BLOCK, &held, &previous_);
  }
  ~HoldSignals() { pthread_sigmask(SIG_SETMASK, &previous_, nullptr); }
  HoldSignals(const HoldSignals&) = delete;
  HoldSignals& operator=(const HoldSignals&) = delete;

 private:
  sigset_t previous_;
};

// Once per intra-op thread count: one task per thread, each worker (not the caller) blocking the signals; workers
// started later by a parallel region inside dnnl inherit the caller's held mask.
void holdSignalsOnWorkers() {
  static int done = 0;
  const int threads = at::get_num_threads();
  if (threads <= 1 || threads == done) return;
  done = threads;
  const pthread_t caller = pthread_self();
  at::parallel_for(0, threads, 1, [caller](int64_t, int64_t) {
    if (pthread_equal(pthread_self(), caller)) return;
    static const sigset_t held = asyncSignals();
    pthread_sigmask(SIG_BLOCK, &held, nullptr);
  });
}

// Row-major C[M,N] = op(A)·op(B) (beta 0, or 1 to accumulate into C), as dnnl_sgemm defines it.
void sgemm(char ta, char tb, int64_t M, int64_t N, int64_t K, const at::Tensor& A, int64_t lda, const at::Tensor& B,
           int64_t ldb, float beta, at::Tensor& C) {
  if (M == 0 || N == 0) return;
  holdSignalsOnWorkers();
  HoldSignals hold;
  if (dnnlSgemm()(ta, tb, M, N, K, 1.0f, A.data_ptr<float>(), lda, B.data_ptr<float>(), ldb, beta, C.data_ptr<float>(),
                  N) != 0)
    throwErr("dnnl_sgemm failed");
}

struct DnnlLinear : public torch::autograd::Function<DnnlLinear> {
  // Without a bias: an undefined tensor cannot be an input of a custom Function in 1.13. backward's third
  // gradient is then undefined, which autograd drops.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w) {
    return forward(ctx, x, w, at::Tensor());
  }
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            const at::Tensor& b) {
    const int64_t K = w.size(1), N = w.size(0);
    at::Tensor x2 = x.reshape({-1, K}).contiguous();
    const int64_t M = x2.size(0);
    auto shape = x.sizes().vec();
    shape.back() = N;
    // [..., N], contiguous, so that its data is the [M, N] matrix sgemm writes. A fresh buffer even with a bias:
    // b.expand([1, N]).contiguous() would be b itself, and sgemm would accumulate into the parameter.
    at::Tensor y = at::empty(shape, x.options());
    if (b.defined()) y.copy_(b);
    sgemm('N', 'T', M, N, K, x2, K, w, K, b.defined() ? 1.0f : 0.0f, y);
    ctx->save_for_backward({x2, w});
    ctx->saved_data["hasBias"] = b.defined();
    ctx->saved_data["xShape"] = x.sizes().vec();
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor& x2 = saved[0];
    const at::Tensor& w = saved[1];
    const bool hasBias = ctx->saved_data["hasBias"].toBool();
    const int64_t K = w.size(1), N = w.size(0), M = x2.size(0);
    at::Tensor gy = grads[0].reshape({M, N}).contiguous();
    at::Tensor gx, gw, gb;
    if (at::GradMode::is_enabled()) {
      // create_graph: differentiable ops, so a double backward sees the graph.
      if (ctx->needs_input_grad(0)) gx = gy.mm(w);
      if (ctx->needs_input_grad(1)) gw = gy.t().mm(x2);
    } else {
      if (ctx->needs_input_grad(0)) {
        gx = at::empty({M, K}, gy.options());
        sgemm('N', 'N', M, K, N, gy, N, w, K, 0.0f, gx);
      }
      if (ctx->needs_input_grad(1)) {
        gw = at::empty({N, K}, gy.options());
        sgemm('T', 'N', N, K, M, gy, N, x2, K, 0.0f, gw);
      }
    }
    if (hasBias && ctx->needs_input_grad(2)) gb = gy.sum(0);
    if (gx.defined()) gx = gx.view(ctx->saved_data["xShape"].toIntVector());
    return {gx, gw, gb};
  }
};

bool dnnlLinearApplies(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  auto cpuF32 = [](const at::Tensor& t) { return t.device().is_cpu() && t.scalar_type() == at::kFloat && t.layout() == at::kStrided; };
  if (!dnnlSgemm() || !cpuF32(x) || !cpuF32(w) || w.dim() != 2 || x.dim() < 1 || !w.is_contiguous()) return false;
  if (x.size(-1) != w.size(1) || w.numel() == 0 || x.is_neg() || x.is_conj() || w.is_neg() || w.is_conj()) return false;
  if (b.defined() && (!cpuF32(b) || b.dim() != 1 || b.size(0) != w.size(0) || b.is_neg())) return false;
  // Forward-mode AD (dual tensors) has no formula here; aten::linear has one.
  return !x._fw_grad(0).defined() && !w._fw_grad(0).defined() && !(b.defined() && b._fw_grad(0).defined());
}

// linear(x, weight, bias | null) -> handle
napi_value Linear(napi_env env, napi_callback_info info) {
  return Guard(env, "linear", [&]() -> napi_value {
    size_t argc = 3;
    napi_value argv[3];
    ok(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
    if (argc < 2) throwType("linear(input, weight, bias?)");
    const at::Tensor& x = get(getHandle(env, argv[0], "input"));
    const at::Tensor& w = get(getHandle(env, argv[1], "weight"));
    at::Tensor b;
    if (argc > 2 && !isNullish(env, argv[2])) b = get(getHandle(env, argv[2], "bias"));
    at::Tensor y = !dnnlLinearApplies(x, w, b) ? at::linear(x, w, b.defined() ? c10::optional<at::Tensor>(b) : c10::nullopt)
                   : b.defined()               ? DnnlLinear::apply(x, w, b)
                                               : DnnlLinear::apply(x, w);
    napi_value out;
    ok(napi_create_int32(env, put(std::move(y)), &out));
    flushExternal(env, false);
    return out;
  });
}

// ---------------------------------------------------------------------------------------------------------------
// RMSNorm on CPU (float32/float64, with a weight): y = x · rsqrt(mean(x², -1) + eps) · w, as a custom Function with
// a hand-derived backward. Autograd through the composite (pow, mean, add, rsqrt, mul, mul) spends ~5 ms per
// [16,128,256] backward in 1.13's kernels for expanded (stride-0) gradients; this backward is ~1 ms:
//   x̂ = x·r,  dw = Σ_rows dy·x̂,  g = dy·w,  dx = r·(g − x̂·mean(g·x̂, -1)).
// Its ops are differentiable, so a double backward (create_graph) still works. RETAIN_FUSED_RMSNORM=0 turns it off.
struct FusedRmsNorm : public torch::autograd::Function<FusedRmsNorm> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w, double eps) {
    at::Tensor r = at::rsqrt(at::square(x).mean(-1, true).add_(eps));  // [..., 1]
    ctx->save_for_backward({x, w, r});
    return (x * r).mul_(w);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &r = saved[2];
    const at::Tensor& dy = grads[0];
    at::Tensor xhat = x * r;
    at::Tensor dw = ctx->needs_input_grad(1) ? (dy * xhat).sum_to_size(w.sizes()) : at::Tensor();
    at::Tensor dx;
    if (ctx->needs_input_grad(0)) {
      at::Tensor g = dy * w;
      at::Tensor t = (g * xhat).mean(-1, true);
      dx = at::addcmul(g, xhat, t, -1).mul_(r);
    }
    return {dx, dw, at::Tensor()};
  }
};

// rmsNorm(x, weight, eps) -> handle, or null where the fused path does not apply (the caller composes it then).
napi_value RmsNorm(napi_env env, napi_callback_info info) {
  return Guard(env, "rmsNorm", [&]() -> napi_value {
    size_t argc = 3;
    napi_value argv[3];
    ok(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
    if (argc < 3) throwType("rmsNorm(input, weight, eps)");
    const at::Tensor& x = get(getHandle(env, argv[0], "input"));
    const at::Tensor& w = get(getHandle(env, argv[1], "weight"));
    const double eps = getNumber(env, argv[2], "eps");
    const auto st = x.scalar_type();
    static const bool enabled = [] {
      const char* v = std::getenv("RETAIN_FUSED_RMSNORM");
      return !(v && std::string(v) == "0");
    }();
    const bool applies = enabled && x.device().is_cpu() && w.device().is_cpu() &&
                         x.layout() == at::kStrided && w.layout() == at::kStrided && (st == at::kFloat || st == at::kDouble) &&
                         w.scalar_type() == st && x.dim() >= 1 && w.dim() == 1 && w.size(0) == x.size(-1) && x.numel() > 0 &&
                         !x._fw_grad(0).defined() && !w._fw_grad(0).defined();
    if (!applies) return null(env);
    napi_value out;
    ok(napi_create_int32(env, put(FusedRmsNorm::apply(x, w, eps)), &out));
    flushExternal(env, false);
    return out;
  });
}
