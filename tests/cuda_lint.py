"""Static lint of the persistent CUDA kernels' compiled code (PTX and SASS),
for what no CPU run can show (issue 12, item 3). Used by test_cuda_compile.py.

- The grid barrier's arrive is a release at gpu scope (`red.release.gpu` or
  `atom.release.gpu`) and its spin an acquire at gpu scope (`ld.acquire.gpu`
  or `atom.acquire.gpu`).
- No non-coherent loads (`ld.global.nc`): h and dG are written by other CTAs.
- No W-sized loads inside the time loop: the W slice is read with streaming
  loads (`ld.global.cs`, slice_product.cuh's stage_slice) and those must all
  lie before the time loop, found as the outermost loop (a backward branch's
  range in the PTX) that contains the barrier's release; the loop's global
  loads are counted and reported.
- Tensor-core instructions (HMMA) in the SASS of the 16-bit and tf32
  instantiations.
"""

import collections
import re

_ENTRY = re.compile(r"^\s*(?:\.visible\s+|\.weak\s+)?\.entry\s+(\w+)\s*\(", re.M)
_LABEL = re.compile(r"^\s*(\$L__\w+):")
_BRANCH = re.compile(r"\bbra(?:\.uni)?\s+(\$L__\w+);")
_GLOBAL_LOAD = re.compile(r"\bld\.global((?:\.[\w:]+)*)\s")
_WIDTH = {"8": 1, "16": 2, "32": 4, "64": 8, "128": 16}

# The persistent kernels' engines, as the mangled name spells the template
# argument (persistent_plan.h: kMmaF16, kMmaBf16, kMmaTf32, kFmaF32, kFmaF64).
ENGINES = {"0": "mma_f16", "1": "mma_bf16", "2": "mma_tf32", "3": "fma_f32", "4": "fma_f64"}
_ENGINE = re.compile(r"EngineE(\d)E")


def engine_of(kernel):
    """The engine name of a persistent kernel's mangled name, or None."""
    m = _ENGINE.search(kernel)
    return ENGINES.get(m.group(1)) if m else None


def ptx_entries(ptx):
    """{entry name: [lines of its body]} of a PTX file."""
    starts = [(m.start(), m.group(1)) for m in _ENTRY.finditer(ptx)]
    entries = {}
    for i, (start, name) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(ptx)
        entries[name] = ptx[start:end].splitlines()
    return entries


def _loops(lines):
    """[(first line, last line)] of every backward branch's range."""
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := _LABEL.match(line))}
    loops = []
    for i, line in enumerate(lines):
        m = _BRANCH.search(line)
        if m and m.group(1) in labels and labels[m.group(1)] < i:
            loops.append((labels[m.group(1)], i))
    return loops


def _load_bytes(qualifiers):
    """Bytes one thread moves with a load of these qualifiers (.v4.u32: 16)."""
    parts = qualifiers.split(".")
    lanes = next((int(p[1:]) for p in parts if re.fullmatch(r"v\d", p)), 1)
    width = next((_WIDTH[p[1:]] for p in reversed(parts) if re.fullmatch(r"[busf]\d+", p)), 0)
    return lanes * width


def lint_persistent_entry(lines):
    """(findings, report) for one persistent kernel's PTX body.

    findings: what breaks a rule above (empty when clean). report: the time
    loop's global loads, {"loads": {qualifiers: count}, "cg_vector_loads": n,
    "bytes_outside_inner_loops": per-thread bytes of the loads that run once
    per step (not in a loop nested in the time loop)}."""
    findings = []
    text = "\n".join(lines)
    if not re.search(r"\b(red|atom)\.release\.gpu\b", text):
        findings.append("no release at gpu scope (red/atom.release.gpu): the barrier's arrive is not a release")
    if not re.search(r"\b(ld|atom)\.acquire\.gpu\b", text):
        findings.append("no acquire at gpu scope (ld/atom.acquire.gpu): the barrier's spin is not an acquire")
    nc = [line.strip() for line in lines if re.search(r"\bld\.global\.nc\b", line)]
    if nc:
        findings.append(f"non-coherent loads of data other CTAs may write: {nc[:3]}")
    releases = [i for i, line in enumerate(lines) if re.search(r"\b(red|atom)\.release\.gpu\b", line)]
    loops = _loops(lines)
    around = [lp for lp in loops if any(lp[0] <= r <= lp[1] for r in releases)]
    if not around:
        findings.append("no loop around the grid barrier: no time loop found")
        return findings, {}
    first, last = max(around, key=lambda lp: lp[1] - lp[0])
    inner = [lp for lp in loops if first <= lp[0] and lp[1] <= last and lp != (first, last)
             and not any(lp[0] <= r <= lp[1] for r in releases)]
    streaming = [i for i, line in enumerate(lines) if re.search(r"\bld\.global\.cs\b", line)]
    if not streaming:
        findings.append("no streaming (.cs) loads: the W slice loader was not found")
    in_loop = [i for i in streaming if first <= i <= last]
    if in_loop:
        findings.append(f"W-slice (ld.global.cs) loads inside the time loop, lines {in_loop[:5]}")
    loads = collections.Counter()
    once_bytes = 0
    cg_vectors = 0
    for i in range(first, last + 1):
        m = _GLOBAL_LOAD.search(lines[i])
        if not m:
            continue
        loads[m.group(1)] += 1
        cg_vectors += ".cg" in m.group(1) and ".v4" in m.group(1)
        if not any(a <= i <= b for a, b in inner):
            once_bytes += _load_bytes(m.group(1))
    if cg_vectors == 0:
        findings.append("no 16-byte L2 (ld.global.cg.v4) loads in the time loop: h/dG is not staged with vectors")
    return findings, {"loads": dict(loads), "cg_vector_loads": cg_vectors,
                      "bytes_outside_inner_loops": once_bytes}


_SASS_FUNCTION = re.compile(r"Function : (\S+)")


def sass_functions(sass):
    """{function name: SASS text} from `cuobjdump -sass` output of one arch."""
    parts = _SASS_FUNCTION.split(sass)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}
