"""Start-up costs, each measured in fresh Python processes.

    python benchmarks/startup.py [--repeats 5] [--python /path/to/python]

1. ``import ReplayTables``: wall time of the import alone (target ≤ 0.15 s), and
   whether numba is in ``sys.modules`` afterwards (it must not be: no JIT at
   import). ``import ReplayTables.PER`` (the front end a PER user imports, which
   pulls in numpy) is reported too, with the same numba check, and ``import numpy``
   and ``import numba`` alone for scale.
2. First PER sample with a warm numba cache (target ≤ 0.6 s): in a fresh process,
   ``import ReplayTables.PER``, build a ``PrioritizedReplay``, add one batch, then
   the first ``sample`` and the first ``update_priorities``. The headline figure is
   the time from the start of the import to the first sample returning; the parts
   are printed too. One untimed process runs first so that numba's on-disk cache is
   warm (the target is about the warm case; a cold cache compiles the kernels once).

Each figure is the median over ``--repeats`` processes (min and max shown): the
machine drifts and the first process after a while also pays a cold file cache.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

IMPORT_SNIPPET = r"""
import json, sys, time
t0 = time.perf_counter()
import {module}
t1 = time.perf_counter()
print("RESULT " + json.dumps({{"import_s": t1 - t0, "numba_loaded": "numba" in sys.modules}}))
"""

PER_SNIPPET = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
t_np = time.perf_counter()
from ReplayTables.engine.schema import FieldSpec
from ReplayTables.PER import PERConfig, PrioritizedReplay
t1 = time.perf_counter()
numba_after_import = "numba" in sys.modules
structure = {{"obs": FieldSpec((17,), np.float32), "action": FieldSpec((6,), np.float32),
             "reward": FieldSpec((), np.float32), "next_obs": FieldSpec((17,), np.float32),
             "done": FieldSpec((), np.bool_)}}
buf = PrioritizedReplay({capacity}, structure, np.random.default_rng(0), PERConfig(priority_exponent=0.6))
rng = np.random.default_rng(1)
m = {n_add}
batch = {{"obs": rng.standard_normal((m, 17), dtype=np.float32),
          "action": rng.standard_normal((m, 6), dtype=np.float32),
          "reward": rng.standard_normal(m, dtype=np.float32),
          "next_obs": rng.standard_normal((m, 17), dtype=np.float32),
          "done": np.zeros(m, dtype=bool)}}
t2 = time.perf_counter()
buf.add_batch(batch)
t3 = time.perf_counter()
b = buf.sample(256)
t4 = time.perf_counter()
buf.update_priorities(b.ids, rng.uniform(0.01, 2.0, 256))
t5 = time.perf_counter()
b = buf.sample(256)
t6 = time.perf_counter()
print("RESULT " + json.dumps({{
    "import_s": t1 - t0, "numpy_import_s": t_np - t0, "construct_s": t2 - t1, "first_add_batch_s": t3 - t2,
    "first_sample_s": t4 - t3, "first_update_s": t5 - t4, "second_sample_s": t6 - t5,
    "import_to_first_sample_s": t4 - t0, "numba_after_import": numba_after_import,
    "numba_after_sample": "numba" in sys.modules}}))
"""


def run(python: str, code: str) -> dict:
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict = json.loads(line[7:])
            return result
    raise RuntimeError(f"no result (rc={out.returncode}):\n{out.stderr[-2000:]}")


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} s (min {min(values):.3f}, max {max(values):.3f})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=sys.executable, help="interpreter with ReplayTables installed")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--capacity", type=int, default=1_000_000)
    ap.add_argument("--n-add", type=int, default=4096)
    ap.add_argument("--json", action="store_true", help="also print the raw per-process results as JSON")
    a = ap.parse_args(argv)

    raw: dict[str, list[dict]] = {}
    ok = True
    print(f"python: {a.python}; {a.repeats} fresh processes per figure (median, min, max)")
    for module in ("ReplayTables", "numpy", "ReplayTables.PER", "numba"):
        run(a.python, IMPORT_SNIPPET.format(module=module))  # warm the file cache
        rs = [run(a.python, IMPORT_SNIPPET.format(module=module)) for _ in range(a.repeats)]
        raw[f"import {module}"] = rs
        numba = any(r["numba_loaded"] for r in rs)
        if module.startswith("ReplayTables"):
            ok &= not numba
        print(f"import {module:18s} {summary([r['import_s'] for r in rs])}; "
              f"numba in sys.modules after import: {numba}")
    ok &= statistics.median(r["import_s"] for r in raw["import ReplayTables"]) <= 0.15

    per_code = PER_SNIPPET.format(capacity=a.capacity, n_add=a.n_add)
    run(a.python, per_code)  # warm numba's on-disk cache (compiles once if cold)
    rs = [run(a.python, per_code) for _ in range(a.repeats)]
    raw["first PER sample"] = rs
    print(f"first PER sample (capacity {a.capacity:,}, after add_batch of {a.n_add}), warm numba cache:")
    for key, label in (("import_to_first_sample_s", "import -> first sample returned"),
                       ("import_s", "  import ReplayTables.PER (+numpy)"),
                       ("construct_s", "  construct PrioritizedReplay"),
                       ("first_add_batch_s", "  first add_batch"),
                       ("first_sample_s", "  first sample(256)"),
                       ("first_update_s", "  first update_priorities(256)"),
                       ("second_sample_s", "  second sample(256)")):
        print(f"  {label:38s} {summary([r[key] for r in rs])}")
    print(f"  numba loaded after import: {any(r['numba_after_import'] for r in rs)}; "
          f"after first sample: {all(r['numba_after_sample'] for r in rs)}")
    first = statistics.median(r["import_to_first_sample_s"] for r in rs)
    ok &= first <= 0.6
    print(f"targets (import ≤ 0.15 s without numba; import -> first PER sample ≤ 0.6 s): "
          f"{'met' if ok else 'NOT met'}")
    if a.json:
        print(json.dumps(raw, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
