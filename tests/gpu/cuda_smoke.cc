// A real CUDA program with no build-time CUDA dependency, for proving GPU tasks on real hardware:
// it loads the driver (libcuda.so.1) at run time, JIT-compiles a PTX vector-add kernel, runs it on
// every visible GPU and checks the result. Built everywhere; on a machine without a GPU it says so
// and exits 2. Run as a Foxden task by tests/gpu/real_gpu_run.sh on the GPU machine.
#include <dlfcn.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

using CUresult = int;
using CUdevice = int;
using CUcontext = void*;
using CUmodule = void*;
using CUfunction = void*;
using CUdeviceptr = unsigned long long;  // NOLINT(google-runtime-int): the driver API's type

// out[i] = a[i] + b[i], for i < n. PTX is JIT-compiled by the driver for whatever GPU it finds.
const char kPtx[] = R"(
.version 7.0
.target sm_50
.address_size 64
.visible .entry add(.param .u64 pa, .param .u64 pb, .param .u64 pout, .param .u32 n)
{
  .reg .pred p;
  .reg .b32 r<5>;
  .reg .b64 d<8>;
  .reg .f32 f<4>;
  ld.param.u64 d1, [pa];
  ld.param.u64 d2, [pb];
  ld.param.u64 d3, [pout];
  ld.param.u32 r1, [n];
  mov.u32 r2, %ctaid.x;
  mov.u32 r3, %ntid.x;
  mov.u32 r4, %tid.x;
  mad.lo.s32 r2, r2, r3, r4;
  setp.ge.u32 p, r2, r1;
  @p bra done;
  cvta.to.global.u64 d1, d1;
  cvta.to.global.u64 d2, d2;
  cvta.to.global.u64 d3, d3;
  mul.wide.u32 d4, r2, 4;
  add.s64 d5, d1, d4;
  add.s64 d6, d2, d4;
  add.s64 d7, d3, d4;
  ld.global.f32 f1, [d5];
  ld.global.f32 f2, [d6];
  add.f32 f3, f1, f2;
  st.global.f32 [d7], f3;
done:
  ret;
}
)";

template <typename F>
F sym(void* lib, const char* name) {
  void* p = dlsym(lib, name);
  if (p == nullptr) {
    std::fprintf(stderr, "libcuda has no %s\n", name);
    std::exit(1);
  }
  return reinterpret_cast<F>(p);
}

}  // namespace

int main() {
  void* lib = dlopen("libcuda.so.1", RTLD_NOW);
  if (lib == nullptr) {
    std::fprintf(stderr, "no CUDA driver here: %s\n", dlerror());
    return 2;
  }
  auto cuInit = sym<CUresult (*)(unsigned)>(lib, "cuInit");
  auto cuDriverGetVersion = sym<CUresult (*)(int*)>(lib, "cuDriverGetVersion");
  auto cuDeviceGetCount = sym<CUresult (*)(int*)>(lib, "cuDeviceGetCount");
  auto cuDeviceGet = sym<CUresult (*)(CUdevice*, int)>(lib, "cuDeviceGet");
  auto cuDeviceGetName = sym<CUresult (*)(char*, int, CUdevice)>(lib, "cuDeviceGetName");
  auto cuDeviceGetUuid = sym<CUresult (*)(unsigned char*, CUdevice)>(lib, "cuDeviceGetUuid");
  auto cuDeviceTotalMem = sym<CUresult (*)(size_t*, CUdevice)>(lib, "cuDeviceTotalMem_v2");
  auto cuCtxCreate = sym<CUresult (*)(CUcontext*, unsigned, CUdevice)>(lib, "cuCtxCreate_v2");
  auto cuCtxDestroy = sym<CUresult (*)(CUcontext)>(lib, "cuCtxDestroy_v2");
  auto cuModuleLoadData = sym<CUresult (*)(CUmodule*, const void*)>(lib, "cuModuleLoadData");
  auto cuModuleGetFunction = sym<CUresult (*)(CUfunction*, CUmodule, const char*)>(lib, "cuModuleGetFunction");
  auto cuMemAlloc = sym<CUresult (*)(CUdeviceptr*, size_t)>(lib, "cuMemAlloc_v2");
  auto cuMemFree = sym<CUresult (*)(CUdeviceptr)>(lib, "cuMemFree_v2");
  auto cuMemcpyHtoD = sym<CUresult (*)(CUdeviceptr, const void*, size_t)>(lib, "cuMemcpyHtoD_v2");
  auto cuMemcpyDtoH = sym<CUresult (*)(void*, CUdeviceptr, size_t)>(lib, "cuMemcpyDtoH_v2");
  auto cuLaunchKernel = sym<CUresult (*)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                         unsigned, void*, void**, void**)>(lib, "cuLaunchKernel");
  auto cuCtxSynchronize = sym<CUresult (*)()>(lib, "cuCtxSynchronize");

  auto check = [](CUresult rc, const char* what) {
    if (rc != 0) {
      std::fprintf(stderr, "%s failed: CUresult %d\n", what, rc);
      std::exit(1);
    }
  };
  check(cuInit(0), "cuInit");
  int version = 0;
  check(cuDriverGetVersion(&version), "cuDriverGetVersion");
  int count = 0;
  check(cuDeviceGetCount(&count), "cuDeviceGetCount");
  std::printf("CUDA driver %d.%d, %d visible GPU(s)\n", version / 1000, (version % 1000) / 10, count);
  if (count == 0) return 1;

  constexpr unsigned kN = 1u << 20;
  std::vector<float> a(kN), b(kN), out(kN);
  for (unsigned i = 0; i < kN; ++i) {
    a[i] = static_cast<float>(i);
    b[i] = 2.0f * static_cast<float>(i);
  }
  for (int ordinal = 0; ordinal < count; ++ordinal) {
    CUdevice dev = 0;
    check(cuDeviceGet(&dev, ordinal), "cuDeviceGet");
    char name[256] = {};
    check(cuDeviceGetName(name, sizeof name, dev), "cuDeviceGetName");
    unsigned char u[16] = {};
    check(cuDeviceGetUuid(u, dev), "cuDeviceGetUuid");
    size_t mem = 0;
    check(cuDeviceTotalMem(&mem, dev), "cuDeviceTotalMem");
    CUcontext ctx = nullptr;
    check(cuCtxCreate(&ctx, 0, dev), "cuCtxCreate");
    CUmodule mod = nullptr;
    check(cuModuleLoadData(&mod, kPtx), "cuModuleLoadData (PTX JIT)");
    CUfunction fn = nullptr;
    check(cuModuleGetFunction(&fn, mod, "add"), "cuModuleGetFunction");
    CUdeviceptr da = 0, db = 0, dout = 0;
    const size_t bytes = kN * sizeof(float);
    check(cuMemAlloc(&da, bytes), "cuMemAlloc");
    check(cuMemAlloc(&db, bytes), "cuMemAlloc");
    check(cuMemAlloc(&dout, bytes), "cuMemAlloc");
    check(cuMemcpyHtoD(da, a.data(), bytes), "cuMemcpyHtoD");
    check(cuMemcpyHtoD(db, b.data(), bytes), "cuMemcpyHtoD");
    unsigned n = kN;
    void* args[] = {&da, &db, &dout, &n};
    check(cuLaunchKernel(fn, kN / 256, 1, 1, 256, 1, 1, 0, nullptr, args, nullptr), "cuLaunchKernel");
    check(cuCtxSynchronize(), "cuCtxSynchronize");
    check(cuMemcpyDtoH(out.data(), dout, bytes), "cuMemcpyDtoH");
    unsigned bad = 0;
    for (unsigned i = 0; i < kN; ++i) {
      if (std::fabs(out[i] - 3.0f * static_cast<float>(i)) > 0.5f) ++bad;
    }
    std::printf("GPU %d: %s, GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x, %zu MiB: "
                "vector add of %u floats %s\n",
                ordinal, name, u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12],
                u[13], u[14], u[15], mem >> 20, kN, bad == 0 ? "OK" : "WRONG");
    cuMemFree(da);
    cuMemFree(db);
    cuMemFree(dout);
    cuCtxDestroy(ctx);
    if (bad != 0) return 1;
  }
  return 0;
}
