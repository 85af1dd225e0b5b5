"""Static checks of a compiled persistent kernel's PTX, for what no CPU run can
show, and the numbers of an analytical per-step estimate (compile gate).

Imports nothing but the standard library: compile_worker.py runs it under
triton 3.6 and 3.9 alike.

What it reads from the PTX (LLVM annotates every basic block with its loop):
- the time loop: the outermost loop holding the grid barrier's arrive;
- the barrier's memory order: the arrive a release at GPU scope
  (`red/atom...gpu...release` or `acq_rel`), the spin an acquire at GPU scope
  (`ld/atom...gpu...acquire`);
- non-coherent loads (`ld.global.nc`), which may serve another program's
  data of an earlier step from a stale cache line;
- loads inside the time loop whose address derives from a weight argument
  (p_w, p_w_hr): the resident slices must be loaded once, before the loop
  (register taint from the `ld.param` of those arguments);
- the global bytes each thread loads per pass through the time loop's body
  (inner loops counted once: one row block), and the tensor-core
  instructions (mma.sync, wgmma) there.
"""

import re

_LABEL = re.compile(r"^(\$L__BB\d+_\d+):|^// (%bb\.\d+):")
_HEADER = re.compile(r"=>\s*This (?:Inner )?Loop Header: Depth=(\d+)")
_IN_LOOP = re.compile(r"in Loop: Header=(BB\d+_\d+) Depth=\d+")
_PARENT = re.compile(r"Parent Loop (BB\d+_\d+) Depth=\d+")
_REG = re.compile(r"%[a-z]+\d+")
_ARRIVE = re.compile(r"\b(?:red|atom)\.global(?:\.\w+)*\.add")
_RELEASE = re.compile(r"\.(?:release|acq_rel)\b")
_ACQUIRE = re.compile(r"\.(?:acquire|acq_rel)\b")
_GPU = re.compile(r"\.gpu\b")
_SPIN = re.compile(r"\b(?:ld|atom)\.global(?:\.\w+)*\.(?:acquire|acq_rel|relaxed|volatile)\b|\bld\.volatile\.global")
_GLOBAL_LOAD = re.compile(r"\bld\.global((?:\.\w+)*)\s|\bcp\.async(?:\.\w+)*\.shared\.global\s")
_MMA = re.compile(r"\b(?:mma\.sync|wgmma\.mma_async)\b")
_BITS = {"b8": 8, "u8": 8, "s8": 8, "b16": 16, "u16": 16, "s16": 16, "f16": 16, "bf16": 16, "b32": 32, "u32": 32,
         "s32": 32, "f32": 32, "b64": 64, "u64": 64, "s64": 64, "f64": 64, "b128": 128}


def _blocks(ptx):
    """[(label, comment lines, instruction lines)] of the kernel body, in order."""
    blocks, label, notes, body = [], "entry", [], []
    for raw in ptx.splitlines():
        line = raw.strip()
        match = _LABEL.match(line)
        if match:
            blocks.append((label, notes, body))
            label = (match.group(1) or match.group(2)).lstrip("$L__")
            notes, body = [line], []
        elif line.startswith("//"):
            if not body:
                notes.append(line)
        elif line and not line.startswith((".", "{", "}")):
            body.append(line)
    blocks.append((label, notes, body))
    return blocks


def _loop_of(notes):
    """(innermost loop header this block is in or heads, parent header) from its comments."""
    text = " ".join(notes)
    header = _IN_LOOP.search(text)
    parent = _PARENT.search(text)
    if _HEADER.search(text):
        return "self", parent.group(1) if parent else None
    return (header.group(1) if header else None), None


def _time_loop_blocks(blocks):
    """Labels of the blocks of the outermost loop that holds a barrier arrive."""
    parents, membership = {}, {}
    for label, notes, _ in blocks:
        loop, parent = _loop_of(notes)
        if loop == "self":
            membership[label] = label
            parents[label] = parent
        else:
            membership[label] = loop

    def outermost(header):
        while header is not None and parents.get(header) is not None:
            header = parents[header]
        return header

    arrive_loops = {outermost(membership[label]) for label, _, body in blocks
                    if membership[label] and any(_ARRIVE.search(line) for line in body)}
    arrive_loops.discard(None)
    if len(arrive_loops) != 1:
        return set()
    loop = arrive_loops.pop()
    return {label for label, _, _ in blocks if membership[label] and outermost(membership[label]) == loop}


def _tainted_registers(blocks, params):
    """Registers whose value derives from the kernel parameters named in params."""
    tainted = set()
    lines = [line for _, _, body in blocks for line in body]
    sources = [line for line in lines if line.startswith("ld.param") and any(f"_param_{p}]" in line for p in params)]
    for line in sources:
        tainted.add(_REG.findall(line)[0])
    changed = True
    while changed:  # to a fixed point: loop-carried moves come after their uses in the text
        changed = False
        for line in lines:
            text = re.sub(r"^@!?%p\d+\s+", "", line)
            opcode = text.split()[0]
            if opcode.startswith(("st.", "red.", "atom.", "cp.async", "bar", "bra", "ret", "wgmma", "fence")):
                continue
            registers = _REG.findall(text)
            if len(registers) < 2:
                continue
            destination, operands = registers[0], registers[1:]
            if destination not in tainted and any(r in tainted for r in operands):
                tainted.add(destination)
                changed = True
    return tainted


def _load_bytes(line):
    """Bytes one thread loads with a global load or cp.async line."""
    if "cp.async" in line:
        size = re.search(r",\s*(0x[0-9a-f]+|\d+)\s*(?:,|;)", line)
        return int(size.group(1), 0) if size else 0
    suffixes = line.split()[0 if not line.startswith("@") else 1].split(".")
    vector = next((int(s[1:]) for s in suffixes if re.fullmatch(r"v\d", s)), 1)
    bits = next((_BITS[s] for s in reversed(suffixes) if s in _BITS), 32)
    return vector * bits // 8


def lint(ptx, weight_params):
    """Facts of one compiled persistent kernel (JSON-ready); weight_params: the PTX
    parameter indices of its weight pointers."""
    blocks = _blocks(ptx)
    loop = _time_loop_blocks(blocks)
    in_loop = [line for label, _, body in blocks if label in loop for line in body]
    everything = [line for _, _, body in blocks for line in body]
    arrives = [line for line in everything if _ARRIVE.search(line)]
    spins = [line for line in everything if _SPIN.search(line) and not _ARRIVE.search(line)]
    tainted = _tainted_registers(blocks, weight_params)
    def from_weights(line):
        return _GLOBAL_LOAD.search(line) and any(r in tainted for r in re.findall(r"\[\s*(%rd\d+)", line))

    weight_loads = [line for line in in_loop if from_weights(line)]
    return {
        "time_loop_found": bool(loop),
        "arrive_release_gpu": bool(arrives) and all(_RELEASE.search(a) and _GPU.search(a) for a in arrives),
        "spin_acquire_gpu": bool(spins) and all(_ACQUIRE.search(s) and _GPU.search(s) for s in spins),
        "arrives": arrives[:3],
        "nc_loads": sum(1 for line in everything if re.search(r"\bld\.global(?:\.\w+)*\.nc\b", line)),
        "weight_params": list(weight_params),
        "weight_loads": sum(1 for line in everything if from_weights(line)),
        "weight_loads_in_loop": len(weight_loads),
        "weight_load_example": weight_loads[:1],
        "loop_global_bytes_per_thread": sum(_load_bytes(line) for line in in_loop if _GLOBAL_LOAD.search(line)),
        "loop_mma": sum(1 for line in in_loop if _MMA.search(line)),
        "loop_wgmma": sum(1 for line in in_loop if "wgmma.mma_async" in line),
    }


def findings(facts, tensor_cores_expected):
    """What fails the lint, one short phrase each."""
    found = []
    if not facts["time_loop_found"]:
        found.append("no time loop holding a barrier arrive found")
    if not facts["arrive_release_gpu"]:
        found.append(f"barrier arrive is not a release at GPU scope: {facts['arrives']}")
    if not facts["spin_acquire_gpu"]:
        found.append("barrier spin is not an acquire at GPU scope")
    if facts["nc_loads"]:
        found.append(f"{facts['nc_loads']} non-coherent (.nc) global loads")
    if facts["weight_params"] and not facts["weight_loads"]:
        found.append("no load of the weights found at all: the lint cannot trace the weight pointers")
    if facts["weight_loads_in_loop"]:
        found.append(f"{facts['weight_loads_in_loop']} loads of the weights inside the time loop, e.g. "
                     f"{facts['weight_load_example']}")
    if tensor_cores_expected and not facts["loop_mma"]:
        found.append("no tensor-core instruction (mma.sync / wgmma) in the time loop")
    return found


# An H100/H200-class estimate (*est.*: no GPU measured it yet): a grid barrier
# round trip, L2 read bandwidth shared by all programs, and one dependent
# tensor-core instruction's latency.
BARRIER_US = 1.0
L2_BYTES_PER_US = 5.5e6
MMA_LATENCY_US = 0.02


def per_step_estimate_us(facts, threads, programs, row_blocks, phases):
    """Microseconds per step: barriers + bytes all programs load from L2 + MMA chains."""
    loaded = facts["loop_global_bytes_per_thread"] * threads * programs * row_blocks
    return phases * BARRIER_US + loaded / L2_BYTES_PER_US + facts["loop_mma"] * row_blocks * MMA_LATENCY_US
