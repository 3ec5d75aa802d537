#!/usr/bin/env python3
"""Whole-command timings: ``kernelcli apply sharpen`` against ImageMagick and libvips.

Warm cache (every command runs at least twice before it is timed). Inputs are
generated deterministically in a temporary folder:

* a 12-megapixel JPEG (4000x3000 RGB, smooth pattern plus noise, Pillow quality 92);
* a 1-megapixel PNG (1000x1000 RGB, same recipe).

Commands compared (3x3 sharpen ``0,-1,0;-1,5,-1;0,-1,0``)::

    kernelcli apply sharpen in.jpg out.jpg
    convert in.jpg -morphology Convolve '3x3: 0,-1,0 -1,5,-1 0,-1,0' out.jpg   (or magick)
    vips conv in.jpg 'out.jpg[Q=92]' sharpen.mat                                  (libvips matrix file)

plus ``kernelcli --help`` and ``kernelcli kernels`` start-up times. With
hyperfine installed each group of commands is one ``hyperfine --warmup 2
--runs 5 --export-json`` call, repeated ``--rounds`` times with the order of the
commands reversed every round (hyperfine itself runs one command's runs back to
back); without it, or with ``--no-hyperfine``, a Python loop interleaves single
runs in a rotating order. Either way the best (minimum) time is reported and
ratios come from minima measured in the same run. Peak memory comes from
``/usr/bin/time -v``; outputs are checked against a NumPy reference.

    python benchmarks/bench_commands.py
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

SHARPEN = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=np.float64)
MAGICK_KERNEL = "3x3: 0,-1,0 -1,5,-1 0,-1,0"
VIPS_MAT = "3 3 1 0\n0 -1 0\n-1 5 -1\n0 -1 0\n"
QUALITY = 92


# --------------------------------------------------------------------------
# finding the programs


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def _all_on_path(name: str) -> list[str]:
    found = []
    for d in os.environ.get("PATH", "").split(os.pathsep):
        p = os.path.join(d or ".", name)
        if os.path.isfile(p) and os.access(p, os.X_OK) and os.path.realpath(p) not in map(os.path.realpath, found):
            found.append(p)
    return found


def find_kernelcli(explicit: str | None) -> str | None:
    """The console script itself: the one beside this Python (skips pyenv-style shims)."""
    if explicit:
        return explicit
    beside = os.path.join(os.path.dirname(sys.executable), "kernelcli")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    return shutil.which("kernelcli")


def find_magick() -> tuple[list[str] | None, str]:
    """ImageMagick 7's ``magick`` or 6's ``convert``; a real binary is preferred to a wrapper script."""
    candidates = []
    for name in ("magick", "convert"):
        for p in _all_on_path(name):
            try:
                v = subprocess.run([p, "-version"], capture_output=True, text=True, timeout=20).stdout
            except (OSError, subprocess.SubprocessError):
                continue
            if "ImageMagick" in v:
                candidates.append((not _is_elf(os.path.realpath(p)), p, v.splitlines()[0]))
    if not candidates:
        return None, ""
    candidates.sort(key=lambda c: c[0])  # ELF binaries first, PATH order kept otherwise
    _, path, version = candidates[0]
    return [path], version


def find_tool(name: str) -> str | None:
    for p in _all_on_path(name):
        if _is_elf(os.path.realpath(p)):
            return p
    return shutil.which(name)


def version_of(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "?"


# --------------------------------------------------------------------------
# inputs


def synth_rgb(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth colour pattern plus Gaussian noise, uint8 RGB, deterministic."""
    rng = np.random.default_rng(seed)
    y = np.arange(height, dtype=np.float32)[:, None]
    x = np.arange(width, dtype=np.float32)[None, :]
    out = np.empty((height, width, 3), dtype=np.uint8)
    for c in range(3):
        v = (128.0
             + 55.0 * np.sin(x / (170.0 + 40 * c) + c) * np.cos(y / (130.0 + 25 * c))
             + 35.0 * np.sin((x + 2 * y) / (420.0 + 60 * c))
             + 25.0 * (x / width - y / height))
        v = v + rng.normal(0.0, 10.0, size=(height, width)).astype(np.float32)
        out[:, :, c] = np.clip(np.rint(v), 0, 255).astype(np.uint8)
    return out


def make_inputs(workdir: str) -> dict:
    paths = {
        "jpg": os.path.join(workdir, "in12mp.jpg"),
        "png": os.path.join(workdir, "in1mp.png"),
        "mat": os.path.join(workdir, "sharpen.mat"),
    }
    Image.fromarray(synth_rgb(4000, 3000, seed=12)).save(paths["jpg"], quality=QUALITY)
    Image.fromarray(synth_rgb(1000, 1000, seed=1)).save(paths["png"])
    with open(paths["mat"], "w") as fh:
        fh.write(VIPS_MAT)
    return paths


# --------------------------------------------------------------------------
# timing


def hyperfine_usable(path: str | None) -> bool:
    if not path:
        return False
    h = subprocess.run([path, "--help"], capture_output=True, text=True).stdout
    return "--shell" in h and "--export-json" in h


def run_hyperfine(hyperfine: str, commands: dict, rounds: int, warmup: int, runs: int,
                  export_dir: str, tag: str) -> dict:
    """{label: [seconds of every timed run]} over ``rounds`` hyperfine calls in alternating order."""
    labels = list(commands)
    times = {k: [] for k in labels}
    for r in range(rounds):
        order = labels if r % 2 == 0 else labels[::-1]
        export = os.path.join(export_dir, f"hyperfine-{tag}-round{r + 1}.json")
        argv = [hyperfine, "-N", "--warmup", str(warmup), "--runs", str(runs), "--style", "none",
                "--export-json", export]
        for k in order:
            argv += ["--command-name", k, shlex.join(commands[k])]
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"hyperfine failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        with open(export) as fh:
            data = json.load(fh)
        for res in data["results"]:
            times[res["command"]].extend(res["times"])
    return times


def run_loop(commands: dict, rounds: int, warmup: int, runs: int) -> dict:
    """Python fallback: single runs interleaved in a rotating order."""
    labels = list(commands)
    for k in labels:
        for _ in range(warmup):
            subprocess.run(commands[k], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    times = {k: [] for k in labels}
    for i in range(runs * rounds):
        s = i % len(labels)
        for k in labels[s:] + labels[:s]:
            t0 = time.perf_counter()
            subprocess.run(commands[k], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            times[k].append(time.perf_counter() - t0)
    return times


def peak_rss_mb(argv: list[str]) -> float | None:
    if not os.path.exists("/usr/bin/time"):
        return None
    proc = subprocess.run(["/usr/bin/time", "-v", *argv], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    for line in proc.stderr.splitlines():
        if "Maximum resident set size" in line:
            return int(line.rsplit(":", 1)[1]) / 1024.0
    return None


# --------------------------------------------------------------------------
# correctness


def reference_sharpen(path: str) -> np.ndarray:
    """Zero-padded 3x3 sharpen of the decoded input, rounded half up and clipped (uint8 values)."""
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    p = np.pad(a, ((1, 1), (1, 1), (0, 0)))
    acc = np.zeros_like(a)
    h, w = a.shape[:2]
    for i in range(3):
        for j in range(3):
            if SHARPEN[i, j]:
                acc += SHARPEN[i, j] * p[i:i + h, j:j + w]
    return np.clip(np.floor(acc + 0.5), 0, 255)


def describe_output(path: str, ref: np.ndarray) -> tuple[str, dict]:
    with Image.open(path) as im:
        sampling = ""
        if im.format == "JPEG":
            from PIL import JpegImagePlugin
            s = JpegImagePlugin.get_sampling(im)
            sampling = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}.get(s, str(s))
        o = np.asarray(im.convert("RGB"), dtype=np.float64)
    if o.shape != ref.shape:
        return f"shape {o.shape} != {ref.shape}", {"ok": False}
    d = np.abs(o - ref)
    inner = d[1:-1, 1:-1]
    stats = {
        "interior_max": float(inner.max()), "interior_mean": float(inner.mean()),
        "interior_frac_gt1": float((inner > 1).mean()), "border_max": float(d.max()),
        "sampling": sampling,
    }
    return "", stats


# --------------------------------------------------------------------------
# report


def table(head: list[str], body: list[list[str]], right=()) -> str:
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(head), "  ".join("-" * w for w in widths)] + [line(b) for b in body])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernelcli", help="path of the kernelcli command (default: the one beside this Python)")
    ap.add_argument("--rounds", type=int, default=2, help="hyperfine calls per group, order reversed each time (default 2)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per command per round (default 5)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs per command first (default 2)")
    ap.add_argument("--no-hyperfine", action="store_true", help="use the Python timing loop even if hyperfine is installed")
    ap.add_argument("--workdir", help="folder for inputs and outputs (default: a new temporary folder, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (inputs, outputs, hyperfine JSON)")
    args = ap.parse_args(argv)
    runs, warmup, rounds = max(5, args.runs), max(2, args.warmup), max(1, args.rounds)

    kcli = find_kernelcli(args.kernelcli)
    if not kcli:
        print("kernelcli is not installed (pip install -e .); nothing to benchmark", file=sys.stderr)
        return 2
    magick, magick_version = find_magick()
    vips = find_tool("vips")
    hyperfine = None if args.no_hyperfine else find_tool("hyperfine")
    use_hf = hyperfine_usable(hyperfine)

    print(f"kernelcli: {kcli} ({version_of([kcli, '--version'])})")
    print(f"ImageMagick: {shlex.join(magick) + ' (' + magick_version + ')' if magick else 'not found - skipped (apt-get install imagemagick)'}")
    print(f"libvips: {vips + ' (' + version_of([vips, '--version']) + ')' if vips else 'not found - skipped (apt-get install libvips-tools)'}")
    if use_hf:
        print(f"timing: hyperfine {version_of([hyperfine, '--version']).split()[-1]} -N --warmup {warmup} --runs {runs}, "
              f"{rounds} round(s) per group, command order reversed each round; best (min) of {runs * rounds} runs")
    else:
        why = "--no-hyperfine" if args.no_hyperfine else "hyperfine not found (apt-get install hyperfine)"
        print(f"timing: Python loop ({why}), {warmup} warm-up runs, {runs * rounds} runs interleaved; best (min)")
    if not os.path.exists("/usr/bin/time"):
        print("note: /usr/bin/time not found (apt-get install time); peak memory is skipped")

    # A pip install compiles kernelcli's modules to bytecode; an editable
    # checkout run with PYTHONDONTWRITEBYTECODE=1 would recompile them in
    # every timed run instead. Compile them once, as an install does.
    import compileall

    import kernelcli as _pkg

    compileall.compile_dir(os.path.dirname(_pkg.__file__), quiet=1)
    print(f"bytecode: compiled {os.path.dirname(_pkg.__file__)} (as pip install does)")

    workdir = args.workdir or tempfile.mkdtemp(prefix="kernelcli-bench-")
    os.makedirs(workdir, exist_ok=True)
    print(f"workdir: {workdir}")
    try:
        t0 = time.perf_counter()
        inp = make_inputs(workdir)
        print(f"inputs: 12MP JPEG {os.path.getsize(inp['jpg']) / 1e6:.1f} MB, 1MP PNG "
              f"{os.path.getsize(inp['png']) / 1e6:.1f} MB (made in {time.perf_counter() - t0:.1f} s)")
        print(flush=True)

        def out(name):
            return os.path.join(workdir, name)

        groups = []
        for tag, src, ext, targets in (
            ("12MP JPEG", inp["jpg"], "jpg", {"ImageMagick": 1.0, "vips": 1.5}),
            ("1MP PNG", inp["png"], "png", {"ImageMagick": 1.5, "vips": None}),
        ):
            cmds = {"kernelcli": [kcli, "apply", "sharpen", src, out(f"kernelcli.{ext}")]}
            if magick:
                cmds["ImageMagick"] = [*magick, src, "-morphology", "Convolve", MAGICK_KERNEL, out(f"magick.{ext}")]
            if vips:
                target = out(f"vips.{ext}") + (f"[Q={QUALITY}]" if ext == "jpg" else "")
                cmds["vips"] = [vips, "conv", src, target, inp["mat"]]
            groups.append((tag, src, ext, cmds, targets))

        startup = {
            "kernelcli --help": [kcli, "--help"],
            "kernelcli kernels": [kcli, "kernels"],
        }
        shebang = open(kcli, "rb").readline().decode(errors="replace")
        if shebang.startswith("#!") and os.path.isabs(shebang[2:].split()[0]):
            startup["python -c pass (floor)"] = [shebang[2:].split()[0], "-c", "pass"]

        # check every command runs before timing anything
        for tag, _, _, cmds, _ in groups:
            for k, c in list(cmds.items()):
                p = subprocess.run(c, capture_output=True, text=True)
                if p.returncode != 0:
                    print(f"note: {k} failed on {tag} ({p.returncode}): {p.stderr.strip()[:300]} - skipped")
                    if k == "kernelcli":
                        return 1
                    del cmds[k]

        results = {}
        for tag, _, _, cmds, _ in groups:
            print(f"timing {tag}: {', '.join(cmds)} ...", flush=True)
            results[tag] = (run_hyperfine(hyperfine, cmds, rounds, warmup, runs, workdir, tag.replace(" ", "-"))
                            if use_hf else run_loop(cmds, rounds, warmup, runs))
        print("timing start-up ...", flush=True)
        results["startup"] = (run_hyperfine(hyperfine, startup, rounds, warmup, runs, workdir, "startup")
                              if use_hf else run_loop(startup, rounds, warmup, runs))

        # ---- table: commands
        rows = []
        met_n = tgt_n = 0
        for tag, _, _, cmds, targets in groups:
            t = results[tag]
            ours = min(t["kernelcli"])
            for peer in ("ImageMagick", "vips"):
                if peer not in cmds:
                    rows.append([tag, f"{ours:.3f}", peer, "-", "-", "-", "skipped (not installed)"])
                    continue
                best = min(t[peer])
                ratio = ours / best
                target = targets.get(peer)
                if target is not None:
                    tgt_n += 1
                    met_n += ratio <= target
                rows.append([tag, f"{ours:.3f}", peer, f"{best:.3f}", f"{ratio:.3f}x",
                             f"<= {target:g}x" if target is not None else "-",
                             ("yes" if ratio <= target else "no") if target is not None else "-"])
        for label in ("kernelcli --help", "kernelcli kernels"):
            best = min(results["startup"][label])
            tgt_n += 1
            met_n += best < 0.2
            rows.append([label, f"{best:.3f}", "-", "-", "-", "< 0.2 s", "yes" if best < 0.2 else "no"])
        floor = results["startup"].get("python -c pass (floor)")
        if floor:
            rows.append(["start-up floor", "-", "python -c pass", f"{min(floor):.3f}", "-", "-", "-"])
        print()
        print(table(["case", "ours (s)", "peer", "peer (s)", "ours/peer", "target", "met"], rows, right={1, 3, 4}))
        print(f"\ntargets met: {met_n} of {tgt_n}")

        # ---- spread, for judging noise
        print("\nall runs (s): min / median / max")
        for tag in [g[0] for g in groups] + ["startup"]:
            for k, v in results[tag].items():
                v = sorted(v)
                print(f"  {tag:10s} {k:24s} {v[0]:.3f} / {v[len(v) // 2]:.3f} / {v[-1]:.3f}  ({len(v)} runs)")

        # ---- peak memory
        if os.path.exists("/usr/bin/time"):
            print("\npeak memory (/usr/bin/time -v, Maximum resident set size):")
            for tag, _, _, cmds, _ in groups:
                for k, c in cmds.items():
                    mb = peak_rss_mb(c)
                    print(f"  {tag:10s} {k:12s} {mb:8.1f} MB" if mb is not None else f"  {tag:10s} {k:12s}   ?")

        # ---- correctness
        print("\noutputs against a NumPy reference (zero padding, round half up, clip; "
              "interior = all but the 1-pixel border):")
        warnings = []
        for tag, src, ext, cmds, _ in groups:
            ref = reference_sharpen(src)
            jpeg_limit = None
            if ext == "jpg":
                # JPEG output is lossy: the yardstick is what re-encoding the exact
                # reference at the same quality (Pillow, 4:2:0) costs on its own.
                floor_path = out("reference-q92.jpg")
                Image.fromarray(ref.astype(np.uint8)).save(floor_path, quality=QUALITY)
                _, fs = describe_output(floor_path, ref)
                jpeg_limit = max(1.0, 1.5 * fs["interior_mean"])
                print(f"  {tag:10s} {'(floor)':12s} the reference itself saved as JPEG Q{QUALITY}: interior max |diff| "
                      f"{fs['interior_max']:.0f}, mean {fs['interior_mean']:.3f}; limit for the mean: {jpeg_limit:.3f}")
            for k in cmds:
                path = out({"kernelcli": "kernelcli", "ImageMagick": "magick", "vips": "vips"}[k] + f".{ext}")
                err, s = describe_output(path, ref)
                if err:
                    warnings.append(f"WARNING: {tag} {k}: {err}")
                    print(f"  {tag:10s} {k:12s} {err}")
                    continue
                extra = f", chroma {s['sampling']}" if s["sampling"] else ""
                print(f"  {tag:10s} {k:12s} interior max |diff| {s['interior_max']:.0f}, mean {s['interior_mean']:.3f}, "
                      f"{100 * s['interior_frac_gt1']:.3f}% > 1; border max {s['border_max']:.0f}{extra}")
                # PNG is lossless: the interior must match to rounding; JPEG re-encodes, so only on average.
                if ext == "png" and s["interior_max"] > 1:
                    warnings.append(f"WARNING: {tag} {k}: interior differs from the reference by up to {s['interior_max']:.0f}")
                if jpeg_limit is not None and s["interior_mean"] > jpeg_limit:
                    warnings.append(f"WARNING: {tag} {k}: interior mean difference {s['interior_mean']:.3f} "
                                    f"(> {jpeg_limit:.3f}, 1.5x the JPEG re-encoding floor)")
        if warnings:
            print()
            for w in warnings:
                print(w)
        else:
            print("all outputs agree with the reference (PNG interior within 1; JPEG interior mean within 1.5x the re-encoding floor)")
        if use_hf and (args.keep or args.workdir):
            print(f"\nhyperfine JSON: {os.path.join(workdir, 'hyperfine-*.json')}")
        return 0
    finally:
        if not (args.keep or args.workdir):
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
