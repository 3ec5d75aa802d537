"""A process that keeps calling the library gets the compiled loops.

Each case runs in a fresh interpreter: whether Numba is loaded is a fact about
the whole process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_repeated_calls_load_numba_in_the_background_and_then_use_it():
    out = _run("""
        import sys
        import numpy as np
        import kernelcli
        from kernelcli.engine import backends
        x = np.random.default_rng(0).uniform(0, 255, (1024, 1024)).astype(np.float32)
        k = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32)
        assert "numba" not in sys.modules
        backends.WARM_UP_AFTER_SECONDS = 1e-9  # (whatever the machine's speed)
        first = kernelcli.convolve(x, k)  # 5 M multiply-adds: the twins
        assert backends._warm_thread is not None  # started once they had spent that long
        calls = 1
        while not backends._warm_done.is_set() and calls < 20:  # the twins serve meanwhile
            assert np.array_equal(kernelcli.convolve(x, k), first)
            calls += 1
        assert backends._twin_seconds >= backends.WARM_UP_AFTER_SECONDS
        kernelcli.warm_up()  # waits for the thread already started; starts no other
        assert backends._warm_done.is_set()
        assert backends.backend(1000).__name__ == "kernelcli.engine._jit"
        from kernelcli.engine import _jit
        # it compiled the loop the twins stood in for, not the ones never used
        assert _jit._rows_unit.signatures and not _jit.pool_rows.signatures
        assert np.array_equal(kernelcli.convolve(x, k), first)  # the same numbers on the compiled loops
        print("ok", calls)
    """)
    assert out.startswith("ok")


def test_warm_up_loads_the_loops_now():
    out = _run("""
        import sys
        import numpy as np
        import kernelcli
        from kernelcli.engine import backends
        assert backends.backend(1000).__name__ == "kernelcli.engine._npkernels"
        kernelcli.warm_up()
        assert "numba" in sys.modules and backends.backend(1000).__name__ == "kernelcli.engine._jit"
        x = np.arange(48, dtype=np.float32).reshape(6, 8)
        assert kernelcli.pool(x, "max", 2).shape == (3, 4)
        print("ok")
    """)
    assert out == "ok"


def test_calls_made_while_numba_loads_run_on_the_twins():
    # Another thread warming up (not finished): small work stays on the twins,
    # so no two threads are ever in the parallel loops at once; the warming
    # thread itself uses the compiled loops.
    out = _run("""
        import threading
        from kernelcli.engine import backends
        backends._warm_thread = threading.Thread(target=lambda: None)  # started, not done
        import numba  # loaded, as it is part-way through a warm-up
        assert not backends.uses_numba(1000)
        backends._warming.active = True
        assert backends.uses_numba(1000)
        backends._warming.active = False
        backends._warm_done.set()
        assert backends.uses_numba(1000)
        print("ok")
    """)
    assert out == "ok"


def test_the_command_line_never_warms_up(tmp_path):
    # One job per process: work on the twins far past the threshold starts nothing.
    out = _run(f"""
        import sys
        import numpy as np
        np.save({str(tmp_path / 'in.npy')!r}, np.ones((1500, 1500), np.float32))
        from kernelcli import cli
        from kernelcli.engine import backends
        backends.WARM_UP_AFTER_SECONDS = 1e-9
        for i in range(3):
            try:
                cli.main(["apply", "sharpen", {str(tmp_path / 'in.npy')!r}, {str(tmp_path / 'o.npy')!r}])
            except SystemExit as done:
                assert not done.code, done.code
        assert backends._twin_seconds > 0
        assert backends._warm_thread is None and "numba" not in sys.modules
        print("ok")
    """)
    assert out == "ok"
