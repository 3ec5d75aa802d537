#!/usr/bin/env python3
"""Side-by-side timings of kernelcli's engine against OpenCV, SciPy, NumPy and PyTorch.

Everything runs in one process on seeded random float32 images (values
0..255, like 8-bit pixels). For each case every function is called once
first (Numba compiles or loads its cache; the result is used for the
correctness check), then all functions of the case are timed in turn,
interleaved and in a rotating order, ``--repeat`` times; the best (minimum)
time of each is reported, and the ratio ours/peer comes from those minima
taken in the same run.

    python benchmarks/bench_engine.py            # 4096x4096 (RGB 2048x2048x3)
    python benchmarks/bench_engine.py --quick    # 1024x1024 (RGB 512x512x3)
    python benchmarks/bench_engine.py --case 31x31   # only the cases whose name contains this

kernelcli lays a large result on the memory of an earlier result of its
size that was dropped (kernelcli._memory), as a loop over images gets it;
the rows marked "new memory every call" give that memory back before each
call, as a single call gets it; the rows "into an existing array" give both
tools an array made once (out= / dst=).

For each convolution the path the engine's cost model picks (direct,
separable or fft: ``kernelcli.engine.method_for``) is printed with its timing.

Peers that are not installed (cv2, scipy, torch) are skipped with a message.
The benchmark extras are not runtime dependencies of kernelcli:
``pip install opencv-python-headless scipy`` (and ``torch`` for max pooling).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import time

import numpy as np

try:
    import kernelcli
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import kernelcli


def _optional(name):
    try:
        return __import__(name)
    except Exception as exc:  # ImportError, or a broken binary wheel
        print(f"note: {name} is not importable ({exc.__class__.__name__}: {exc}); its rows are skipped")
        return None


# --------------------------------------------------------------------------
# timing


def _now():
    return time.perf_counter()


def time_interleaved(funcs: dict, repeat: int, setups: dict | None = None) -> dict:
    """Best-of-``repeat`` seconds for each function, calls interleaved in a
    rotating order; ``setups[name]()``, if given, runs untimed before each
    call of that function."""
    setups = setups or {}
    names = list(funcs)
    best = {n: math.inf for n in names}
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(repeat):
            k = r % len(names)
            for n in names[k:] + names[:k]:
                f = funcs[n]
                if n in setups:
                    setups[n]()
                t0 = _now()
                result = f()
                t1 = _now()
                del result
                best[n] = min(best[n], t1 - t0)
    finally:
        if gc_was:
            gc.enable()
    return best


# --------------------------------------------------------------------------
# correctness


def compare(ours: np.ndarray, peer: np.ndarray, atol: float, margin: int) -> tuple[str, float, bool]:
    """Return (verdict, max abs difference over the whole array, interior ok)."""
    ours = np.asarray(ours, dtype=np.float64)
    peer = np.asarray(peer, dtype=np.float64)
    if ours.shape != peer.shape:
        return f"SHAPE MISMATCH ours {ours.shape} peer {peer.shape}", math.inf, False
    diff = np.abs(ours - peer)
    worst = float(np.nanmax(diff)) if diff.size else 0.0
    rtol = 1e-5
    full_ok = bool(np.allclose(ours, peer, rtol=rtol, atol=atol))
    m = margin
    inner = (slice(m, ours.shape[0] - m), slice(m, ours.shape[1] - m))
    if ours[inner].size == 0:
        inner_ok = full_ok
    else:
        inner_ok = bool(np.allclose(ours[inner], peer[inner], rtol=rtol, atol=atol))
    if full_ok:
        return "same", worst, True
    if inner_ok:
        return f"interior same, border differs (margin {m})", worst, True
    return "MISMATCH", worst, False


# --------------------------------------------------------------------------
# the cases


class Peer:
    def __init__(self, name, func, target=None, check=True, atol=None, margin=0, note=""):
        self.name = name
        self.func = func
        self.target = target  # ours/peer must be <= target
        self.check = check
        self.atol = atol
        self.margin = margin
        self.note = note


class Case:
    def __init__(self, name, ours, peers, path=None, setup=None):
        self.name = name
        self.ours = ours
        self.peers = [p for p in peers if p is not None]
        self.path = path  # the engine's method for a convolution ("direct", "separable", "fft")
        self.setup = setup  # run untimed before each timed call of ours


def tolerance(weights: np.ndarray, x: np.ndarray) -> float:
    """An absolute float32 tolerance for a weighted sum of |w| * max|x| magnitude."""
    return max(1e-6, 4e-6 * float(np.abs(weights).sum()) * float(np.abs(x).max()))


def path_of(kernel, x, **kw) -> str:
    """The way kernelcli.convolve computes this kernel on x (its cost model's choice)."""
    from kernelcli import engine

    if isinstance(kernel, str):
        kernel = kernelcli.get_kernel(kernel)
    return engine.method_for(getattr(kernel, "array", kernel), x.shape, **kw)


def build_cases(size: int, rgb_size: int, cv2, ndimage, torch):
    rng = np.random.default_rng(20240611)
    img = (rng.random((size, size), dtype=np.float32) * np.float32(255.0))
    rgb = (rng.random((rgb_size, rgb_size, 3), dtype=np.float32) * np.float32(255.0))
    copy_dst = np.empty_like(img)

    sharpen = kernelcli.get_kernel("sharpen")
    k3 = sharpen.array  # float32 3x3: 0,-1,0;-1,5,-1;0,-1,0

    # 15x15 Gaussian, sigma 7/3 (the size gaussian:SIGMA would pick), as a plain 2-D array
    r = np.arange(15, dtype=np.float64) - 7
    g1 = np.exp(-(r * r) / (2 * (7 / 3) ** 2))
    g1 /= g1.sum()
    g1_32 = g1.astype(np.float32)
    g15 = np.outer(g1, g1).astype(np.float32)

    k31 = rng.standard_normal((31, 31)).astype(np.float32)

    BC = cv2.BORDER_CONSTANT if cv2 else None
    cases = []

    def cvpeer(name, func, **kw):
        return Peer(name, func, **kw) if cv2 is not None else None

    # 3x3 sharpen
    peers = [
        cvpeer("cv2.filter2D", lambda: cv2.filter2D(img, -1, k3, borderType=BC),
               target=0.67, atol=tolerance(k3, img), margin=1),
        Peer("memcpy (np.copyto)", lambda: np.copyto(copy_dst, img), target=2.0, check=False),
    ]
    if ndimage is not None:
        peers.append(Peer("scipy.ndimage.correlate",
                          lambda: ndimage.correlate(img, k3, mode="constant", cval=0.0),
                          atol=tolerance(k3, img), margin=1))
    cases.append(Case(f"3x3 sharpen {size}x{size}", lambda: kernelcli.convolve(img, sharpen), peers,
                      path=path_of(sharpen, img)))

    # 15x15 Gaussian as a plain 2-D array
    cases.append(Case(
        f"15x15 gaussian {size}x{size}",
        lambda: kernelcli.convolve(img, g15),
        [
            cvpeer("cv2.sepFilter2D", lambda: cv2.sepFilter2D(img, -1, g1_32, g1_32, borderType=BC),
                   target=1.0, atol=tolerance(g15, img), margin=7),
            cvpeer("cv2.filter2D", lambda: cv2.filter2D(img, -1, g15, borderType=BC),
                   atol=tolerance(g15, img), margin=7),
        ],
        path=path_of(g15, img),
    ))

    # 31x31 random: not separable, so the engine's FFT path (OpenCV's filter2D
    # switches to a DFT for kernels this size too); target: no slower than filter2D
    cases.append(Case(
        f"31x31 random {size}x{size}",
        lambda: kernelcli.convolve(img, k31),
        [cvpeer("cv2.filter2D", lambda: cv2.filter2D(img, -1, k31, borderType=BC),
                target=1.0, atol=tolerance(k31, img), margin=15)],
        path=path_of(k31, img),
    ))

    # RGB 3x3
    cases.append(Case(
        f"RGB 3x3 sharpen {rgb_size}x{rgb_size}x3",
        lambda: kernelcli.convolve(rgb, sharpen),
        [cvpeer("cv2.filter2D", lambda: cv2.filter2D(rgb, -1, k3, borderType=BC),
                target=0.67, atol=tolerance(k3, rgb), margin=1)],
        path=path_of(sharpen, rgb),
    ))

    # stride 2
    cases.append(Case(
        f"3x3 stride 2 {size}x{size}",
        lambda: kernelcli.convolve(img, sharpen, stride=2),
        [cvpeer("cv2.filter2D + [::2, ::2]",
                lambda: cv2.filter2D(img, -1, k3, borderType=BC)[::2, ::2],
                target=0.4, atol=tolerance(k3, img), margin=1)],
        path=path_of(sharpen, img, stride=2),
    ))

    # The same, with kernelcli's result on new memory every call, as a single
    # call gets it: the memory of the results dropped before is given back to
    # the system, untimed, before each call (see kernelcli._memory).
    threes = ((f"3x3 sharpen {size}x{size}", img, "3x3"), (f"RGB 3x3 sharpen {rgb_size}x{rgb_size}x3", rgb, "rgb"))
    if cv2 is not None:
        fresh = ", new memory every call"
        for label, x, _ in threes:
            cases.append(Case(
                label + fresh, lambda x=x: kernelcli.convolve(x, sharpen),
                [Peer("cv2.filter2D", lambda x=x: cv2.filter2D(x, -1, k3, borderType=BC),
                      target=0.67, atol=tolerance(k3, x), margin=1)],
                path=path_of(sharpen, x), setup=kernelcli.release_memory))

    # The same convolutions into arrays made once: kernelcli's out= against
    # OpenCV's dst=, so that neither side pays for fresh pages of memory.
    # (filter2D's dst is full size: it computes every output before the
    # subsampling view.)
    if cv2 is not None:
        mine = {"3x3": np.empty_like(img), "rgb": np.empty_like(rgb), "15": np.empty_like(img),
                "s2": np.empty((size // 2, size // 2), np.float32)}
        theirs = {"3x3": np.empty_like(img), "rgb": np.empty_like(rgb)}
        into = " into an existing array (out= / dst=)"
        for label, x, key in threes:
            cases.append(Case(
                label + into, lambda x=x, key=key: kernelcli.convolve(x, sharpen, out=mine[key]),
                [Peer("cv2.filter2D", lambda x=x, key=key: cv2.filter2D(x, -1, k3, dst=theirs[key], borderType=BC),
                      target=0.67, atol=tolerance(k3, x), margin=1)],
                path=path_of(sharpen, x)))
        cases.append(Case(
            f"15x15 gaussian {size}x{size}{into}", lambda: kernelcli.convolve(img, g15, out=mine["15"]),
            [Peer("cv2.sepFilter2D", lambda: cv2.sepFilter2D(img, -1, g1_32, g1_32, dst=theirs["3x3"], borderType=BC),
                  target=1.0, atol=tolerance(g15, img), margin=7)],
            path=path_of(g15, img)))
        cases.append(Case(
            f"3x3 stride 2 {size}x{size}{into}", lambda: kernelcli.convolve(img, sharpen, stride=2, out=mine["s2"]),
            [Peer("cv2.filter2D + [::2, ::2]",
                  lambda: cv2.filter2D(img, -1, k3, dst=theirs["3x3"], borderType=BC)[::2, ::2],
                  target=0.4, atol=tolerance(k3, img), margin=1)],
            path=path_of(sharpen, img, stride=2)))

    # max pooling 2x2
    half = size // 2
    peers = []
    if torch is not None:
        F = torch.nn.functional

        def torch_pool():
            return F.max_pool2d(torch.from_numpy(img)[None, None], 2).numpy()[0, 0]

        peers.append(Peer("torch max_pool2d", torch_pool, target=0.1, atol=0.0))
    peers.append(Peer("numpy reshape-max",
                      lambda: img[: half * 2, : half * 2].reshape(half, 2, half, 2).max(axis=(1, 3)),
                      atol=0.0))
    cases.append(Case(f"maxpool 2x2 {size}x{size}", lambda: kernelcli.pool(img, "max", 2), peers))
    return cases


# --------------------------------------------------------------------------
# report


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 10 else f"{ms:.2f}" if ms < 100 else f"{ms:.1f}"


def print_table(rows: list[dict]) -> None:
    head = ["case", "peer", "ours (ms)", "peer (ms)", "ours/peer", "target", "met"]
    body = [[
        r["case"], r["peer"], fmt_ms(r["ours_s"]), fmt_ms(r["peer_s"]), f"{r['ratio']:.3f}x",
        f"<= {r['target']:g}x" if r["target"] is not None else "-",
        ("yes" if r["met"] else "no") if r["target"] is not None else "-",
    ] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    right = {2, 3, 4}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    print(line(head))
    print("  ".join("-" * w for w in widths))
    for b in body:
        print(line(b))


# --------------------------------------------------------------------------
# what a library user sees: repeated calls in a fresh process

_FRESH = """
import sys, time
import numpy as np
import kernelcli
op, size, calls, warm = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "warm"
x = np.random.default_rng(0).uniform(0, 255, (size, size)).astype(np.float32)
sharpen = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32)
run = {"convolve": lambda: kernelcli.convolve(x, sharpen, padding=1),
       "pool": lambda: kernelcli.pool(x, "max", 2),
       "relu": lambda: kernelcli.relu(x)}[op]
if warm:
    kernelcli.warm_up()
    run()
times = []
for _ in range(calls):
    t0 = time.perf_counter()
    y = run()
    times.append(time.perf_counter() - t0)
    del y
print(" ".join(repr(t) for t in times))
"""


def library_user(size: int, processes: int = 3, calls: int = 10) -> list[dict]:
    """Calls 1..``calls`` of ``convolve`` (sharpen 3x3, padding 1), ``pool``
    (max 2x2) and ``relu`` in fresh processes, nothing pre-loaded (the median
    over ``processes`` processes per call), against the same call of processes
    that called ``kernelcli.warm_up()`` first (the median of their last calls)."""
    import statistics
    import subprocess

    def run(op, warm):
        out = subprocess.run([sys.executable, "-c", _FRESH, op, str(size), str(calls), warm],
                             capture_output=True, text=True, check=True)
        return [float(t) for t in out.stdout.split()]

    rows = []
    for op in ("convolve", "pool", "relu"):
        fresh = [run(op, "cold") for _ in range(processes)]
        per_call = [statistics.median(p[i] for p in fresh) for i in range(calls)]
        warmed = statistics.median(run(op, "warm")[-1] for _ in range(processes))
        rows.append({"op": op, "per_call": per_call, "warmed": warmed, "ratio": per_call[-1] / warmed})
    return rows


def print_library_user(rows: list[dict], size: int) -> None:
    print(f"library user: {size}x{size} float32, calls 1-{len(rows[0]['per_call'])} in a fresh process "
          f"(median of fresh processes per call, ms) vs the same call after kernelcli.warm_up(); "
          f"target: last call <= 1.2x warmed")
    for r in rows:
        calls = " ".join(fmt_ms(t) for t in r["per_call"])
        print(f"  {r['op']:<9} {calls} | warmed {fmt_ms(r['warmed'])} | last/warmed {r['ratio']:.2f}"
              f" {'met' if r['ratio'] <= 1.2 else 'NOT met'}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1024x1024 (RGB 512x512x3) instead of 4096x4096 (RGB 2048x2048x3)")
    ap.add_argument("--repeat", type=int, default=7, help="timed calls per function, best taken (min 5; default 7)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--case", metavar="TEXT", help="run only the cases whose name contains TEXT")
    ap.add_argument("--library-user", action="store_true",
                    help="only the fresh-process rows: calls 1-10 of convolve, pool and relu, nothing pre-loaded")
    args = ap.parse_args(argv)
    repeat = max(5, args.repeat)
    size, rgb_size = (1024, 512) if args.quick else (4096, 2048)
    if args.library_user:
        print_library_user(library_user(size), size)
        return 0

    cv2 = _optional("cv2")
    scipy = _optional("scipy")
    ndimage = None
    if scipy is not None:
        import scipy.ndimage as ndimage
    torch = _optional("torch")

    import numba

    print(f"python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
          f"kernelcli {kernelcli.__version__}")
    peers_v = []
    if cv2 is not None:
        peers_v.append(f"cv2 {cv2.__version__} ({cv2.getNumThreads()} threads)")
    if scipy is not None:
        peers_v.append(f"scipy {scipy.__version__}")
    if torch is not None:
        peers_v.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print("peers: " + (", ".join(peers_v) or "none"))
    print(f"cpus: {os.cpu_count()}, numba threads: {numba.config.NUMBA_NUM_THREADS}; "
          f"best of {repeat} interleaved runs; image {size}x{size} float32, RGB {rgb_size}x{rgb_size}x3")
    if cv2 is None:
        print("note: without cv2 the filter2D / sepFilter2D rows are skipped")
    print()

    cases = build_cases(size, rgb_size, cv2, ndimage, torch)
    if args.case:
        cases = [c for c in cases if args.case in c.name]
        if not cases:
            print(f"no case name contains {args.case!r}")
            return 2
    rows, warnings, firsts = [], [], []
    for case in cases:
        t0 = _now()
        ours_out = case.ours()
        first = _now() - t0
        firsts.append((case.name, first))
        for p in case.peers:
            peer_out = p.func()
            if p.check:
                verdict, worst, ok = compare(ours_out, peer_out, p.atol, p.margin)
                msg = f"check {case.name} vs {p.name}: {verdict} (max |diff| {worst:.3g}, atol {p.atol:.3g})"
                print(msg)
                if not ok:
                    warnings.append("WARNING: " + msg)
                elif verdict != "same":
                    warnings.append("note: " + msg)
            del peer_out
        del ours_out
        funcs = {"ours": case.ours, **{p.name: p.func for p in case.peers}}
        best = time_interleaved(funcs, repeat, {"ours": case.setup} if case.setup else None)
        for p in case.peers:
            ratio = best["ours"] / best[p.name]
            rows.append({
                "case": case.name, "peer": p.name, "ours_s": best["ours"], "peer_s": best[p.name],
                "ratio": ratio, "target": p.target, "path": case.path,
                "met": (ratio <= p.target) if p.target is not None else None,
            })
        path = f" (path: {case.path})" if case.path else ""
        print(f"timed {case.name}: ours {fmt_ms(best['ours'])} ms{path}", flush=True)

    print()
    print_table(rows)
    print()
    print_library_user(library_user(size), size)
    print()
    print("first call of ours per case (Numba compile or cache load, page faults): "
          + "; ".join(f"{n} {fmt_ms(t)} ms" for n, t in firsts))
    targets = [r for r in rows if r["target"] is not None]
    met = sum(1 for r in targets if r["met"])
    print(f"targets met: {met} of {len(targets)}")
    if warnings:
        print()
        for w in warnings:
            print(w)
    else:
        print("all results agree with their peers (np.allclose, float32 tolerance)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"size": size, "rgb_size": rgb_size, "repeat": repeat, "rows": rows,
                       "warnings": warnings}, fh, indent=2, default=float)
        print(f"results written to {args.json}")
    return 1 if any(w.startswith("WARNING") for w in warnings) else 0


if __name__ == "__main__":
    sys.exit(main())
