"""Copies the persistent kernels' sources into a folder with their inline PTX
replaced by calls into the CPU emulator (emulator.cpp), so the kernels'
C++ (staging, fragments, products, pointwise steps, grid barrier) compiles
with g++ unchanged otherwise. Every patch must apply exactly once: a source
that changed under a patch makes this fail rather than emulate something else."""

import os
import re
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.abspath(os.path.join(HERE, os.pardir, os.pardir, "csrc"))

# (file under csrc, literal text, replacement)
PATCHES = [
    ("cuda/grid_barrier.cuh",
     'asm volatile("red.release.gpu.global.add.u64 [%0], %1;" ::"l"(counter), "l"(value) : "memory");',
     "__atomic_fetch_add(counter, value, __ATOMIC_RELEASE);"),
    ("cuda/grid_barrier.cuh",
     'asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(value) : "l"(counter) : "memory");',
     "value = __atomic_load_n(counter, __ATOMIC_ACQUIRE);\n  rk_emu_spin_pause();"),
    ("cuda/grid_barrier.cuh",
     'asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(value) : "l"(word) : "memory");',
     "value = __atomic_load_n(word, __ATOMIC_RELAXED);"),
    ("cuda/grid_barrier.cuh",
     'asm volatile("st.relaxed.gpu.global.u32 [%0], %1;" ::"l"(word), "r"(1u) : "memory");',
     "__atomic_store_n(word, 1u, __ATOMIC_RELAXED);"),
    ("cuda/grid_barrier.cuh",
     'asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns));',
     "ns = static_cast<unsigned long long>(rk_emu_nanoseconds());"),
    # Static shared memory: one process per CTA, so a static is per CTA.
    ("cuda/grid_barrier.cuh", "__shared__ int aborted;", "static int aborted;"),
    ("cuda/slice_product.cuh",
     '#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800\n    uint32_t out;\n'
     '    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(out) : "f"(v));\n    return out;\n#else\n'
     '    return __float_as_uint(v);\n#endif',
     "return rk_emu_tf32_rna(v);"),
    ("cuda/slice_product.cuh", "#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800", "#if 0"),
    ("cuda/slice_product.cuh", "(void)d, (void)a, (void)b;", "rk_emu_mma(static_cast<int>(E), d, a, b);"),
    # The step kernels' launcher (unused by the persistent kernels) has a <<<>>> launch.
    ("cuda/device_common.cuh", "kernel<<<elementwise_blocks(elements), kThreads, 0, stream>>>(p);",
     "(void)kernel, (void)p, (void)stream;"),
    ("cuda/persistent_forward.cu", "extern __shared__ __align__(16) unsigned char shared_raw[];",
     "unsigned char* const shared_raw = rk_emu_dynamic_shared();"),
    ("cuda/persistent_backward.cu", "extern __shared__ __align__(16) unsigned char shared_raw[];",
     "unsigned char* const shared_raw = rk_emu_dynamic_shared();"),
]

FILES = ["cell_math.h", "cuda/params.h", "cuda/persistent_plan.h", "cuda/device_common.cuh",
         "cuda/mma_fragments.h", "cuda/slice_product.cuh", "cuda/grid_barrier.cuh",
         "cuda/persistent_common.cuh", "cuda/persistent_forward.cu", "cuda/persistent_backward.cu"]


def patch_into(out_dir, extra_patches=()):
    """extra_patches: (file, old, new) applied after PATCHES, each exactly once
    (the tests' planted faults)."""
    texts = {}
    for name in FILES:
        with open(os.path.join(CSRC, name)) as f:
            texts[name] = f.read()
    for name, old, new in [*PATCHES, *extra_patches]:
        count = texts[name].count(old)
        if count != 1:
            raise RuntimeError(f"patch for csrc/{name} matched {count} times: {old!r}")
        texts[name] = texts[name].replace(old, new)
    for name, text in texts.items():
        if name.startswith("cuda/") and re.search(r"\basm\b", text.replace("#if 0", "")) and \
                name != "cuda/slice_product.cuh":
            raise RuntimeError(f"csrc/{name} still has inline PTX after patching")
        path = os.path.join(out_dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    return out_dir


if __name__ == "__main__":
    patch_into(sys.argv[1])
