# Sourced by the GPU scripts (never in CI): tract-cuda opens libcuda, NVRTC, cuBLAS and cuDNN
# at run time; on a machine with PyTorch they come from the nvidia-* pip packages, and a CUDA
# toolkit's lib64 is added when present.
libdirs=$(python3 - <<'PY'
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
print(":".join(sorted({d for r in roots for d in glob.glob(os.path.join(r, "nvidia", "*", "lib"))})))
PY
)
for cuda in "${CUDA_HOME:-}" /usr/local/cuda; do
  if [ -n "$cuda" ] && [ -d "$cuda/lib64" ]; then
    export CUDA_HOME=$cuda
    libdirs="$libdirs:$cuda/lib64"
    break
  fi
done
export LD_LIBRARY_PATH="$libdirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
