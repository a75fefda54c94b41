#!/usr/bin/env bash
# Packs what the GPU machine needs to run Foxden (it installs nothing): stripped foxden,
# foxden-agent and its static foxden-zygote, the shared libraries they use beyond glibc and
# libstdc++, and the CUDA smoke program. Output: gpu-bundle/ (git-ignored). Used with tests/gpu/real_gpu_run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
ninja -C "$BUILD" foxden foxden-agent foxden-zygote cuda_smoke exec_driver_check >/dev/null
rm -rf gpu-bundle && mkdir -p gpu-bundle/bin gpu-bundle/lib
for b in foxden foxden-agent foxden-zygote exec_driver_check; do strip -o "gpu-bundle/bin/$b" "$BUILD/bin/$b"; done
strip -o gpu-bundle/cuda_smoke "$BUILD/bin/cuda_smoke"
ldd "$BUILD/bin/foxden" "$BUILD/bin/foxden-agent" "$BUILD/bin/exec_driver_check" | awk '$3 ~ /^\// {print $3}' | sort -u |
  grep -Ev '/(libc|libm|libpthread|libdl|librt|libgcc_s|libstdc\+\+)\.so' |
  while read -r lib; do cp -L "$lib" gpu-bundle/lib/; done
du -sh gpu-bundle
