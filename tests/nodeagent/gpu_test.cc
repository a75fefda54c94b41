// GPU detection against a FAKE tree: plain files stand in for device nodes, a shell script stands
// in for nvidia-smi, and fake /proc/devices and sysfs files are written per test. Nothing here
// needs root or reads the real /dev, /sys or /proc.

#include "nodeagent/devices/gpu.h"

#include <doctest/doctest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

namespace nodeagent {
namespace {

namespace fs = std::filesystem;

constexpr const char* kUuid0 = "GPU-11111111-fake-4000-8000-000000000000";
constexpr const char* kUuid1 = "GPU-22222222-fake-4000-8000-000000000001";

// A throwaway fake machine: dev/, sys/, proc/ and a fake nvidia-smi under one temp dir.
class FakeRig {
 public:
  FakeRig() {
    std::string tmpl = (fs::temp_directory_path() / "foxden-fake-gpu-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    root_ = tmpl;
    fs::create_directories(root_ / "dev");
    fs::create_directories(root_ / "sys");
    fs::create_directories(root_ / "proc");
  }
  FakeRig(const FakeRig&) = delete;
  FakeRig& operator=(const FakeRig&) = delete;
  ~FakeRig() {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  std::string path(const std::string& rel) const { return (root_ / rel).string(); }
  std::string dev(const std::string& name) const { return path("dev/" + name); }

  void write(const std::string& rel, const std::string& text) const {
    fs::path p = root_ / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
  }
  void touchDev(std::initializer_list<const char*> names) const {
    for (const char* n : names) write(std::string("dev/") + n, "");
  }
  // The fake nvidia-smi refuses any other arguments, so the query string is checked too.
  void fakeNvidiaSmi(const std::string& body) const {
    std::string script =
        "#!/bin/sh\n"
        "# FAKE nvidia-smi for tests\n"
        "if [ \"$1\" != \"--query-gpu=index,uuid,name,memory.total\" ] || "
        "[ \"$2\" != \"--format=csv,noheader,nounits\" ]; then\n"
        "  echo \"fake nvidia-smi: unexpected arguments: $*\" >&2; exit 2\n"
        "fi\n" +
        body + "\n";
    write("fake-nvidia-smi", script);
    fs::permissions(root_ / "fake-nvidia-smi", fs::perms::owner_all);
  }
  void fakeTwoNvidia() const {
    fakeNvidiaSmi(std::string("cat <<'EOF'\n") + "0, " + kUuid0 +
                  ", NVIDIA H100 80GB HBM3, 81559\n" + "1, " + kUuid1 +
                  ", NVIDIA H100 80GB HBM3, 81559\nEOF");
    touchDev({"nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"});
    write("proc/devices",
          "Character devices:\n  1 mem\n195 nvidia-frontend\n195 nvidia\n508 nvidia-uvm\n\n"
          "Block devices:\n  8 sd\n509 nvidia-uvm\n");
  }
  // Two AMD render nodes (one with full sysfs, one bare) and an Intel one in between.
  void fakeAmd() const {
    touchDev({"kfd", "dri/card0", "dri/renderD128", "dri/renderD129", "dri/renderD130"});
    write("sys/class/drm/renderD128/device/vendor", "0x1002\n");
    write("sys/class/drm/renderD128/device/product_name", "AMD Instinct MI210\n");
    write("sys/class/drm/renderD128/device/mem_info_vram_total", "68702699520\n");
    write("sys/class/drm/renderD128/device/unique_id", "fake5a1b2c3d4e5f\n");
    write("sys/class/drm/renderD129/device/vendor", "0x8086\n");
    write("sys/class/drm/renderD130/device/vendor", "0x1002\n");
    write("sys/class/drm/renderD130/device/device", "0x740f\n");
  }

  GpuDetectorOptions options(int timeoutMs = 5000) const {
    GpuDetectorOptions o;
    o.nvidiaSmi = path("fake-nvidia-smi");  // absent unless a test writes it
    o.devRoot = path("dev");
    o.sysRoot = path("sys");
    o.procDevices = path("proc/devices");
    o.procDriverNvidia = path("proc/driver/nvidia");
    o.timeoutMs = timeoutMs;
    return o;
  }
  GpuInventory detect() const {
    auto r = GpuDetector(options()).detect();
    REQUIRE_MESSAGE(r.isOk(), r.status().toString());
    return std::move(r).value();
  }

 private:
  fs::path root_;
};

std::vector<const Gpu*> pick(const GpuInventory& inv,
                             std::vector<std::pair<std::string, int>> want) {
  auto r = select(inv, want);
  REQUIRE_MESSAGE(r.isOk(), r.status().toString());
  return *r;
}

bool mentions(const std::vector<std::string>& lines, const std::string& what) {
  for (const auto& l : lines) {
    if (l.find(what) != std::string::npos) return true;
  }
  return false;
}

TEST_CASE("gpu: two NVIDIA GPUs from a fake nvidia-smi, with nodes and the uvm major") {
  FakeRig rig;
  rig.fakeTwoNvidia();
  GpuInventory inv = rig.detect();
  REQUIRE(inv.gpus.size() == 2);
  for (int i = 0; i < 2; ++i) {
    const Gpu& g = inv.gpus[static_cast<size_t>(i)];
    CHECK(g.vendor == "nvidia");
    CHECK(g.index == i);
    CHECK(g.uuid == (i == 0 ? kUuid0 : kUuid1));
    CHECK(g.model == "NVIDIA H100 80GB HBM3");
    CHECK(g.memoryBytes == int64_t{81559} * 1024 * 1024);
    CHECK(g.deviceNodes == std::vector<std::string>{rig.dev("nvidia" + std::to_string(i))});
  }
  // nvidia-modeset is absent from the fake tree, so it is not listed.
  CHECK(inv.sharedNodes == std::vector<std::string>{rig.dev("nvidiactl"), rig.dev("nvidia-uvm"),
                                                    rig.dev("nvidia-uvm-tools")});
  CHECK(inv.nvidiaUvmMajor == 508);  // the character major, not the block one
  CHECK(inv.kfdMajor == -1);
  CHECK(inv.warnings.empty());

  // A task given GPU 1 alone gets its node and the shared ones, never /dev/nvidia0.
  auto one = pick(inv, {{"nvidia", 1}});
  CHECK(inv.deviceNodes(one) == std::vector<std::string>{rig.dev("nvidia1"), rig.dev("nvidiactl"),
                                                         rig.dev("nvidia-uvm"),
                                                         rig.dev("nvidia-uvm-tools")});
  auto env = inv.env(one);
  CHECK(env == std::map<std::string, std::string>{{"CUDA_VISIBLE_DEVICES", kUuid1},
                                                  {"NVIDIA_VISIBLE_DEVICES", kUuid1}});
  // Order follows the allocation.
  auto both = pick(inv, {{"nvidia", 1}, {"nvidia", 0}});
  CHECK(inv.env(both)["CUDA_VISIBLE_DEVICES"] == std::string(kUuid1) + "," + kUuid0);
  CHECK(inv.deviceNodes(both).size() == 5);
  CHECK(inv.env({}).empty());
  CHECK(inv.deviceNodes({}).empty());
}

TEST_CASE("gpu: device minors come from /proc/driver/nvidia when index and minor differ") {
  FakeRig rig;
  rig.fakeTwoNvidia();
  rig.write(
      "proc/driver/nvidia/gpus/0000:07:00.0/information",
      std::string("Model: \t\t NVIDIA A100\nGPU UUID: \t ") + kUuid0 + "\nDevice Minor: \t 1\n");
  rig.write(
      "proc/driver/nvidia/gpus/0000:0f:00.0/information",
      std::string("Model: \t\t NVIDIA A100\nGPU UUID: \t ") + kUuid1 + "\nDevice Minor: \t 0\n");
  GpuInventory inv = rig.detect();
  REQUIRE(inv.gpus.size() == 2);
  CHECK(inv.gpus[0].deviceNodes == std::vector<std::string>{rig.dev("nvidia1")});
  CHECK(inv.gpus[1].deviceNodes == std::vector<std::string>{rig.dev("nvidia0")});
}

TEST_CASE("gpu: garbage lines are skipped, odd but valid lines are kept") {
  FakeRig rig;
  rig.fakeNvidiaSmi(std::string("cat <<'EOF'\n") +
                    "index, uuid, name, memory.total [MiB]\n"  // a header despite noheader
                    "\n"
                    "this is not csv\n"
                    "x, GPU-fake-x, Broken, 100\n" +
                    "0, " + kUuid0 + ", NVIDIA RTX 6000 Ada Generation, 49140\r\n" +  // CRLF
                    "1, " + kUuid1 + ", Fake, Model, With Commas, [N/A]\n" +
                    "1, GPU-fake-dup, Duplicate, 10\n"
                    "2, GPU-fake-mem, Bad Memory, lots\n"
                    "EOF");
  rig.touchDev({"nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"});
  GpuInventory inv = rig.detect();
  REQUIRE(inv.gpus.size() == 2);
  CHECK(inv.gpus[0].model == "NVIDIA RTX 6000 Ada Generation");
  CHECK(inv.gpus[0].memoryBytes == int64_t{49140} << 20);
  CHECK(inv.gpus[1].model == "Fake, Model, With Commas");
  CHECK(inv.gpus[1].memoryBytes == 0);  // [N/A]: kept, size unknown
  CHECK(mentions(inv.warnings, "memory.total [MiB]"));
  CHECK(mentions(inv.warnings, "this is not csv"));
  CHECK(mentions(inv.warnings, "bad index"));
  CHECK(mentions(inv.warnings, "duplicate index"));
  CHECK(mentions(inv.warnings, "bad memory.total 'lots'"));
  // No /proc/devices in this tree: the uvm major is unknown, which is not an error.
  CHECK(inv.nvidiaUvmMajor == -1);
}

TEST_CASE("gpu: nvidia-smi output with no parseable line is an error") {
  FakeRig rig;
  rig.fakeNvidiaSmi("echo 'Unknown Error'");
  auto r = GpuDetector(rig.options()).detect();
  REQUIRE_FALSE(r.isOk());
  CHECK(r.status().message().find("no GPU line that parses: 'Unknown Error'") != std::string::npos);
}

TEST_CASE("gpu: a failing nvidia-smi is an error that says why") {
  FakeRig rig;
  rig.fakeNvidiaSmi(
      "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\" "
      ">&2\nexit 9");
  auto r = GpuDetector(rig.options()).detect();
  REQUIRE_FALSE(r.isOk());
  CHECK(r.status().code() == 503);
  CHECK(r.status().message().find("exited 9: NVIDIA-SMI has failed") != std::string::npos);
}

TEST_CASE("gpu: 'No devices were found' is zero GPUs, not an error") {
  FakeRig rig;
  rig.fakeNvidiaSmi("echo 'No devices were found'\nexit 6");
  GpuInventory inv = rig.detect();
  CHECK(inv.gpus.empty());
  CHECK(inv.sharedNodes.empty());
}

// The process (by pid) is gone or a zombie waiting for init: either way it no longer runs.
bool stopped(pid_t pid) {
  for (int i = 0; i < 200; ++i) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return true;
    size_t paren = line.rfind(')');
    if (paren != std::string::npos && line.size() > paren + 2 && line[paren + 2] == 'Z')
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

TEST_CASE("gpu: a hanging nvidia-smi times out and its whole process group is killed") {
  FakeRig rig;
  std::string pidFile = rig.path("fake-sleep.pid");
  SUBCASE("hangs with stdout open") {
    rig.fakeNvidiaSmi("echo '0, GPU-fake, Partial'\nsleep 29 &\necho $! > " + pidFile + "\nwait");
  }
  SUBCASE("closes its output, then hangs") {
    rig.fakeNvidiaSmi("exec >/dev/null 2>&1\nsleep 29 &\necho $! > " + pidFile + "\nwait");
  }
  auto start = std::chrono::steady_clock::now();
  auto r = GpuDetector(rig.options(300)).detect();
  auto took = std::chrono::steady_clock::now() - start;
  REQUIRE_FALSE(r.isOk());
  CHECK(r.status().code() == 504);
  CHECK(r.status().message().find("did not finish within 300 ms") != std::string::npos);
  CHECK(took < std::chrono::seconds(5));
  std::ifstream in(pidFile);
  pid_t sleeper = 0;
  REQUIRE((in >> sleeper));
  CHECK(stopped(sleeper));
  if (!stopped(sleeper)) kill(sleeper, SIGKILL);  // do not leave it behind if the check failed
}

TEST_CASE("gpu: no nvidia-smi means no NVIDIA GPUs, with a warning if nodes exist") {
  FakeRig rig;  // fake-nvidia-smi is never written
  GpuInventory inv = rig.detect();
  CHECK(inv.gpus.empty());
  CHECK(inv.warnings.empty());
  rig.touchDev({"nvidia0", "nvidiactl"});
  inv = rig.detect();
  CHECK(inv.gpus.empty());
  CHECK(mentions(inv.warnings, "was not found"));
}

TEST_CASE("gpu: a GPU without its node is not offered; a missing uvm node says how to make it") {
  FakeRig rig;
  rig.fakeTwoNvidia();
  fs::remove(rig.dev("nvidia1"));
  fs::remove(rig.dev("nvidia-uvm"));
  GpuInventory inv = rig.detect();
  REQUIRE(inv.gpus.size() == 1);
  CHECK(inv.gpus[0].index == 0);
  CHECK(mentions(inv.warnings,
                 "NVIDIA GPU 1 (" + std::string(kUuid1) + ") has no " + rig.dev("nvidia1")));
  CHECK(mentions(inv.warnings, "mknod -m 666 " + rig.dev("nvidia-uvm") + " c 508 0"));
  CHECK(inv.sharedNodes ==
        std::vector<std::string>{rig.dev("nvidiactl"), rig.dev("nvidia-uvm-tools")});
  auto r = select(inv, {{"nvidia", 1}});
  REQUIRE_FALSE(r.isOk());
  CHECK(r.status().message() == "this worker has no nvidia GPU 1 (nvidia GPUs here: 0)");
}

TEST_CASE("gpu: AMD GPUs from kfd, render nodes and sysfs; other vendors ignored") {
  FakeRig rig;
  rig.fakeAmd();
  rig.write("proc/devices", "Character devices:\n226 drm\n235 kfd\n");
  GpuInventory inv = rig.detect();
  REQUIRE(inv.gpus.size() == 2);
  const Gpu& a = inv.gpus[0];
  CHECK(a.vendor == "amd");
  CHECK(a.index == 0);
  CHECK(a.model == "AMD Instinct MI210");
  CHECK(a.memoryBytes == 68702699520);
  CHECK(a.uuid == "GPU-fake5a1b2c3d4e5f");
  CHECK(a.deviceNodes == std::vector<std::string>{rig.dev("dri/renderD128")});
  const Gpu& b = inv.gpus[1];  // renderD129 is Intel: skipped, so renderD130 is AMD index 1
  CHECK(b.index == 1);
  CHECK(b.model == "AMD GPU 0x740f");
  CHECK(b.memoryBytes == 0);
  CHECK(b.uuid.empty());
  CHECK(b.deviceNodes == std::vector<std::string>{rig.dev("dri/renderD130")});
  CHECK(inv.sharedNodes == std::vector<std::string>{rig.dev("kfd")});
  CHECK(inv.kfdMajor == 235);
  CHECK(inv.warnings.empty());

  auto second = pick(inv, {{"amd", 1}});
  CHECK(inv.deviceNodes(second) ==
        std::vector<std::string>{rig.dev("dri/renderD130"), rig.dev("kfd")});
  // No UUID: the task-local ordinal (the exec driver shows ROCm only this render node).
  CHECK(inv.env(second) == std::map<std::string, std::string>{{"HIP_VISIBLE_DEVICES", "0"},
                                                              {"ROCR_VISIBLE_DEVICES", "0"}});
  CHECK(inv.env(pick(inv, {{"amd", 0}}))["ROCR_VISIBLE_DEVICES"] == "GPU-fake5a1b2c3d4e5f");
  auto both = inv.env(pick(inv, {{"amd", 0}, {"amd", 1}}));
  CHECK(both["ROCR_VISIBLE_DEVICES"] == "0,1");  // mixing UUIDs and ordinals would be ambiguous
  CHECK(both["HIP_VISIBLE_DEVICES"] == "0,1");
  CHECK(both.count("CUDA_VISIBLE_DEVICES") == 0);
}

TEST_CASE("gpu: AMD render nodes without /dev/kfd are not offered") {
  FakeRig rig;
  rig.fakeAmd();
  fs::remove(rig.dev("kfd"));
  GpuInventory inv = rig.detect();
  CHECK(inv.gpus.empty());
  CHECK(inv.sharedNodes.empty());
  CHECK(mentions(inv.warnings, "2 AMD GPU(s) found but " + rig.dev("kfd") + " is missing"));
}

TEST_CASE("gpu: a mixed rig gives each task only its vendors' shared nodes") {
  FakeRig rig;
  rig.fakeTwoNvidia();
  rig.fakeAmd();
  GpuInventory inv = rig.detect();
  REQUIRE(inv.gpus.size() == 4);
  auto nodes = inv.deviceNodes(pick(inv, {{"nvidia", 0}}));
  CHECK(std::find(nodes.begin(), nodes.end(), rig.dev("kfd")) == nodes.end());
  nodes = inv.deviceNodes(pick(inv, {{"amd", 0}}));
  CHECK(nodes == std::vector<std::string>{rig.dev("dri/renderD128"), rig.dev("kfd")});
  auto mixed = pick(inv, {{"amd", 1}, {"nvidia", 0}});
  nodes = inv.deviceNodes(mixed);
  CHECK(nodes == std::vector<std::string>{rig.dev("dri/renderD130"), rig.dev("nvidia0"),
                                          rig.dev("nvidiactl"), rig.dev("nvidia-uvm"),
                                          rig.dev("nvidia-uvm-tools"), rig.dev("kfd")});
  auto env = inv.env(mixed);
  CHECK(env["CUDA_VISIBLE_DEVICES"] == kUuid0);
  CHECK(env["ROCR_VISIBLE_DEVICES"] == "0");
}

TEST_CASE("gpu: select refuses unknown vendors, absent GPUs and repeats") {
  FakeRig rig;
  rig.fakeTwoNvidia();
  GpuInventory inv = rig.detect();
  auto vendor = select(inv, {{"intel", 0}});
  REQUIRE_FALSE(vendor.isOk());
  CHECK(vendor.status().message() == "unknown GPU vendor 'intel' (want nvidia or amd)");
  auto absent = select(inv, {{"nvidia", 0}, {"nvidia", 7}});
  REQUIRE_FALSE(absent.isOk());
  CHECK(absent.status().code() == 404);
  CHECK(absent.status().message() == "this worker has no nvidia GPU 7 (nvidia GPUs here: 0, 1)");
  auto noAmd = select(inv, {{"amd", 0}});
  REQUIRE_FALSE(noAmd.isOk());
  CHECK(noAmd.status().message() == "this worker has no amd GPU 0 (amd GPUs here: none)");
  auto twice = select(inv, {{"nvidia", 1}, {"nvidia", 1}});
  REQUIRE_FALSE(twice.isOk());
  CHECK(twice.status().message() == "nvidia GPU 1 is named twice");
  auto none = select(inv, {});
  REQUIRE(none.isOk());
  CHECK(none->empty());
}

TEST_CASE("gpu: /proc/devices parsing keeps character majors only") {
  auto m = parseProcDevices(
      "Character devices:\n  1 mem\n195 nvidia\n511 nvidia-uvm\n\nBlock devices:\n"
      "  7 loop\n259 blkext\n");
  CHECK(m.at("mem") == 1);
  CHECK(m.at("nvidia") == 195);
  CHECK(m.at("nvidia-uvm") == 511);
  CHECK(m.count("loop") == 0);
  CHECK(parseProcDevices("").empty());
}

}  // namespace
}  // namespace nodeagent
