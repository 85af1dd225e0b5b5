"""Runs the persistent CUDA kernels in the CPU emulator (emulator.cpp) and
compares them with the reference backend in float64.

build(out_dir) patches and compiles the emulator; emulate_forward /
emulate_backward run one launch; check_case runs forward then backward of
one problem and returns {name: (max error, bound)} or raises on NaN, a hang,
a crash or a wrong barrier count. Also usable by hand:
    python tests/persistent_emulator/driver.py lstm 1 T=3 B=5 H=19 sms=3 tbptt=2
"""

import os
import subprocess
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import patch_sources  # noqa: E402

ENGINES = {"mma_f16": 0, "mma_bf16": 1, "mma_tf32": 2, "fma_f32": 3, "fma_f64": 4}
ENGINE_DTYPE = {0: torch.float16, 1: torch.bfloat16, 2: torch.float32, 3: torch.float32, 4: torch.float64}
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
# Max error over max(1, |expected|): the engines' rounding, far below what a
# wrong index, a missing term or a race gives (O(1)).
FLOOR = {0: 2e-2, 1: 6e-2, 2: 1e-2, 3: 1e-5, 4: 1e-10}


def build(out_dir, extra_patches=()):
    """Patched sources and the emulator binary under out_dir; returns its path.
    extra_patches: planted faults, (file under csrc, old text, new text)."""
    src = patch_sources.patch_into(os.path.join(out_dir, "src"), extra_patches)
    binary = os.path.join(out_dir, "persistent_emulator")
    cmd = ["g++", "-std=c++20", "-O1", "-pthread", "-Wall", "-Wno-unknown-pragmas",
           "-I", os.path.join(HERE, "shim"), "-I", os.path.dirname(HERE),  # ptx_mma_tables.h
           "-I", src, "-I", os.path.join(src, "cuda"),
           os.path.join(HERE, "emulator.cpp"), "-o", binary]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError("building the emulator failed:\n" + result.stderr[-4000:])
    return binary


def _write(folder, name, tensor):
    with open(os.path.join(folder, name + ".bin"), "wb") as f:
        f.write(tensor.contiguous().view(torch.uint8).numpy().tobytes())


def _read(folder, name, dtype, shape):
    with open(os.path.join(folder, name + ".out"), "rb") as f:
        data = bytearray(f.read())
    return torch.frombuffer(data, dtype=dtype).reshape(shape).clone()


def _run(binary, folder, args, timeout):
    argv = [binary, f"dir={folder}"] + [f"{k}={v}" for k, v in args.items()]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    plan = dict(line.split("=", 1) for line in open(os.path.join(folder, "plan.txt")).read().splitlines())
    report = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return proc, plan, report


class EmulationError(AssertionError):
    pass


def emulate_forward(binary, cell, engine, inputs, *, sms, max_shared=232448, training=True,
                    spin_ms=60000, extra=None, timeout=600):
    """inputs: xg, w_hh, h0, c0, b_hn, lengths in the engine's dtype (CPU)."""
    dtype, acc = ENGINE_DTYPE[engine], (torch.float64 if engine == 4 else torch.float32)
    T, B, GH = inputs["xg"].shape
    H = GH // GATES[cell]
    with tempfile.TemporaryDirectory() as folder:
        _write(folder, "xg", inputs["xg"].to(dtype))
        _write(folder, "w_hh", inputs["w_hh"].to(dtype))
        _write(folder, "h0", inputs["h0"].to(dtype))
        if cell == "lstm":
            _write(folder, "c0_acc", inputs["c0"].to(dtype).to(acc))
        if cell == "gru":
            _write(folder, "h0_acc", inputs["h0"].to(dtype).to(acc))
        if inputs.get("b_hn") is not None:
            _write(folder, "b_hn", inputs["b_hn"].to(dtype))
        if inputs.get("lengths") is not None:
            _write(folder, "lengths", inputs["lengths"].to(torch.int64))
        args = dict(mode="fwd", cell=cell, engine=engine, T=T, B=B, H=H, sms=sms,
                    max_shared=max_shared, training=int(training), spin_ms=spin_ms,
                    lengths=int(inputs.get("lengths") is not None),
                    bhn=int(inputs.get("b_hn") is not None), **(extra or {}))
        proc, plan, report = _run(binary, folder, args, timeout)
        if plan["refusal"] != "none":
            return {"plan": plan, "refused": plan["refusal"]}
        S = T if training else 1
        out = {"plan": plan, "report": report, "returncode": proc.returncode, "stderr": proc.stderr,
               "y": _read(folder, "y", dtype, (T, B, H)), "h_n": _read(folder, "h_n", dtype, (B, H))}
        if cell in ("lstm", "gru"):
            out["gates"] = _read(folder, "gates", dtype, (S, B, GH))
        if cell == "lstm":
            out["cells"] = _read(folder, "cells", dtype, (S, B, H))
            out["c_n"] = _read(folder, "c_n", acc, (B, H))
        if cell == "gru":
            out["hn"] = _read(folder, "hn", dtype, (S, B, H))
        return out


def emulate_backward(binary, cell, engine, saved, *, sms, tbptt=0, max_shared=232448,
                     spin_ms=60000, extra=None, timeout=600):
    """saved: dy, dh_n, dc_n, w_hh, gates, cells, c0, hn, y, h0, lengths."""
    dtype, acc = ENGINE_DTYPE[engine], (torch.float64 if engine == 4 else torch.float32)
    T, B, H = saved["y"].shape
    G = GATES[cell]
    with tempfile.TemporaryDirectory() as folder:
        for name in ("dy", "w_hh", "y"):
            _write(folder, name, saved[name].to(dtype))
        _write(folder, "dh_n", saved["dh_n"].to(dtype).to(acc))
        if cell == "lstm":
            for name in ("gates", "cells", "c0"):
                _write(folder, name, saved[name].to(dtype))
            _write(folder, "dc_n", saved["dc_n"].to(dtype).to(acc))
        if cell == "gru":
            for name in ("gates", "hn", "h0"):
                _write(folder, name, saved[name].to(dtype))
        if saved.get("lengths") is not None:
            _write(folder, "lengths", saved["lengths"].to(torch.int64))
        args = dict(mode="bwd", cell=cell, engine=engine, T=T, B=B, H=H, sms=sms,
                    max_shared=max_shared, tbptt=tbptt, spin_ms=spin_ms,
                    lengths=int(saved.get("lengths") is not None), **(extra or {}))
        proc, plan, report = _run(binary, folder, args, timeout)
        if plan["refusal"] != "none":
            return {"plan": plan, "refused": plan["refusal"]}
        out = {"plan": plan, "report": report, "returncode": proc.returncode, "stderr": proc.stderr,
               "dxg": _read(folder, "dxg", dtype, (T, B, G * H)), "dh0": _read(folder, "dh0", acc, (B, H))}
        if cell == "gru":
            out["dg_rec"] = _read(folder, "dg_rec", dtype, (T, B, G * H))
        if cell == "lstm":
            out["dc0"] = _read(folder, "dc0", acc, (B, H))
        return out


def _reference(cell, inputs, upstream, tbptt):
    """Outputs and gradients of the reference backend in float64."""
    import rnnkernels

    leaves = {k: (None if v is None else v.double().clone().requires_grad_())
              for k, v in inputs.items() if k != "lengths"}
    y, h_n, c_n = rnnkernels.recurrence(cell, leaves["xg"], leaves["w_hh"], leaves["h0"], leaves.get("c0"),
                                        b_hn=leaves.get("b_hn"), lengths=inputs.get("lengths"),
                                        tbptt=tbptt or None, backend="reference")
    loss = (y * upstream["dy"]).sum() + (h_n * upstream["dh_n"]).sum()
    if c_n is not None:
        loss = loss + (c_n * upstream["dc_n"]).sum()
    loss.backward()
    out = {"y": y.detach(), "h_n": h_n.detach()}
    if c_n is not None:
        out["c_n"] = c_n.detach()
    out.update({f"grad {k}": v.grad for k, v in leaves.items() if v is not None})
    return out


def _check_launch(result, what, expected_barriers):
    if result["returncode"] != 0 or result["report"].get("result") != "ok":
        raise EmulationError(f"{what}: {result['report']} rc={result['returncode']}\n{result['stderr'][-3000:]}")
    if result["report"]["error_flag"] != "0" or result["report"]["abort_word"] != "0":
        raise EmulationError(f"{what}: a barrier gave up: {result['report']}")
    ctas = int(result["plan"]["ctas"])
    counter = int(result["report"]["barrier_counter"])
    if counter != expected_barriers * ctas:
        raise EmulationError(f"{what}: barrier counter {counter}, expected {expected_barriers} x {ctas} CTAs")


def make_inputs(cell, engine, T, B, H, *, lengths=None, seed=0, scale=0.5, b_hn=True):
    """Op inputs and upstream gradients, float64 holding values of the engine's dtype."""
    dtype = ENGINE_DTYPE[engine]
    G = GATES[cell]
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        # Rounded to the engine's dtype: the reference sees the same inputs.
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype).double()

    inputs = {"xg": rand(T, B, G * H), "w_hh": rand(G * H, H), "h0": rand(B, H),
              "c0": rand(B, H) if cell == "lstm" else None,
              "b_hn": rand(H) if cell == "gru" and b_hn else None,
              "lengths": None if lengths is None else torch.tensor(lengths, dtype=torch.int64)}
    upstream = {"dy": rand(T, B, H), "dh_n": rand(B, H), "dc_n": rand(B, H)}
    return inputs, upstream


def _saved(inputs, upstream, fwd):
    return dict(upstream, w_hh=inputs["w_hh"], y=fwd["y"], h0=inputs["h0"], c0=inputs["c0"],
                gates=fwd.get("gates"), cells=fwd.get("cells"), hn=fwd.get("hn"), lengths=inputs["lengths"])


def check_case(binary, cell, engine, T, B, H, *, sms, lengths=None, tbptt=0, max_shared=232448,
               bwd_max_shared=None, seed=0, scale=0.5, b_hn=True, fwd_extra=None, bwd_extra=None):
    """Forward and backward of one problem in the emulator against the
    reference; returns {name: (error, bound)} and the two plans. fwd_extra and
    bwd_extra: more emulator arguments for each launch (a stalled CTA)."""
    inputs, upstream = make_inputs(cell, engine, T, B, H, lengths=lengths, seed=seed, scale=scale, b_hn=b_hn)
    expected = _reference(cell, inputs, upstream, tbptt)

    fwd = emulate_forward(binary, cell, engine, inputs, sms=sms, max_shared=max_shared, extra=fwd_extra)
    if "refused" in fwd:
        return {"refused": fwd["refused"]}, fwd["plan"], None
    _check_launch(fwd, "forward", T)
    bwd = emulate_backward(binary, cell, engine, _saved(inputs, upstream, fwd), sms=sms, tbptt=tbptt,
                           max_shared=bwd_max_shared or max_shared, extra=bwd_extra)
    if "refused" in bwd:
        return {"refused": bwd["refused"]}, fwd["plan"], bwd["plan"]
    _check_launch(bwd, "backward", T)

    actual = {"y": fwd["y"], "h_n": fwd["h_n"], "grad xg": bwd["dxg"], "grad h0": bwd["dh0"]}
    if cell == "lstm":
        actual["c_n"] = fwd["c_n"]
        actual["grad c0"] = bwd["dc0"]
    d_rec = bwd["dg_rec"] if cell == "gru" else bwd["dxg"]
    previous = torch.cat([inputs["h0"].unsqueeze(0), fwd["y"].double()[:-1]])  # h_{t-1}
    actual["grad w_hh"] = torch.einsum("tbr,tbk->rk", d_rec.double(), previous)
    if inputs["b_hn"] is not None:
        actual["grad b_hn"] = d_rec.double()[:, :, 2 * H:].sum((0, 1))
    errors = {}
    for name, value in expected.items():
        got = actual[name].double()
        if torch.isnan(got).any():
            raise EmulationError(f"{name}: NaN at {torch.isnan(got).nonzero()[:5].tolist()}")
        scale_ = max(1.0, value.abs().max().item())
        errors[name] = ((got - value).abs().max().item(), FLOOR[engine] * scale_)
    return errors, fwd["plan"], bwd["plan"]


def check_abort(binary, cell, engine, T, B, H, *, sms, backward, stall_cta, stall_sync, spin_ms=300,
                stall_ms=1500, lengths=None, tbptt=0):
    """One CTA stalls (sleeps before its stall_sync-th __syncthreads) longer
    than the barrier's spin limit: the launch must end (no hang), every CTA
    leave, the error flag hold the direction's code, the abort word be raised,
    and every output be NaN. Returns the launch's report."""
    inputs, upstream = make_inputs(cell, engine, T, B, H, lengths=lengths)
    stall = {"stall_cta": stall_cta, "stall_sync": stall_sync, "stall_ms": stall_ms}
    if backward:
        fwd = emulate_forward(binary, cell, engine, inputs, sms=sms)
        _check_launch(fwd, "forward", T)
        out = emulate_backward(binary, cell, engine, _saved(inputs, upstream, fwd), sms=sms, tbptt=tbptt,
                               spin_ms=spin_ms, extra=stall)
        names, code = [n for n in ("dxg", "dg_rec", "dh0", "dc0") if n in out], "2"
    else:
        out = emulate_forward(binary, cell, engine, inputs, sms=sms, spin_ms=spin_ms, extra=stall)
        names, code = [n for n in ("y", "h_n", "gates", "cells", "hn", "c_n") if n in out], "1"
    report = out["report"]
    if out["returncode"] != 0 or report.get("result") != "ok":
        raise EmulationError(f"the aborted launch did not end cleanly: {report}\n{out['stderr'][-3000:]}")
    if report["error_flag"] != code or report["abort_word"] != "1":
        raise EmulationError(f"no abort recorded: {report}")
    for name in names:
        finite = ~torch.isnan(out[name].double())
        if finite.any():
            raise EmulationError(f"{name}: not NaN after the abort at {finite.nonzero()[:5].tolist()}")
    return report


if __name__ == "__main__":
    cell, engine = sys.argv[1], int(sys.argv[2])
    kw = {}
    for arg in sys.argv[3:]:
        key, value = arg.split("=", 1)
        kw[key] = eval(value)  # noqa: S307 - a developer's command line
    T, B, H = kw.pop("T"), kw.pop("B"), kw.pop("H")
    out = os.environ.get("EMULATOR_DIR", "/tmp/emu")
    binary = os.path.join(out, "persistent_emulator")
    if not os.path.exists(binary) or os.environ.get("REBUILD"):
        binary = build(out)
    errors, fplan, bplan = check_case(binary, cell, engine, T, B, H, **kw)
    print("forward plan:", fplan)
    print("backward plan:", bplan)
    for name, (err, bound) in [] if "refused" in errors else errors.items():
        print(f"{name:10s} error {err:.3e} bound {bound:.3e} {'OK' if err <= bound else 'FAIL'}")
