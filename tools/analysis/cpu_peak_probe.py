"""Peak CPU memory of each step of a distillation config, measured in a fresh child process.

In a long-lived process freed memory stays resident, so a step's peak would not show in its
resident set size (RSS). The child runs with glibc's allocator returning every block above 64 KiB to
the system at once (``MALLOC_MMAP_THRESHOLD_``), warms each step up once, then samples its own RSS
(``/proc/self/statm``) from a thread while the step runs. Linux only.

Used by tools/analysis/benchmark.py; run alone (prints one JSON line):

    python tools/analysis/cpu_peak_probe.py '["CONFIG", SIZE, BATCH, KEEP_CHECKPOINT, null]'
"""
import json
import os
import os.path as osp
import subprocess
import sys
import threading
import time
from typing import Optional

import torch

MB = 2**20


def rss_bytes() -> int:
    """Resident set size of this process (bytes), from /proc/self/statm."""
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


class PeakRSS:
    """Sampled peak RSS inside the block above the RSS at entry (``peak``, bytes, set on exit).

    Args:
        interval (float): seconds between samples. Defaults to 0.0005.
    """

    def __init__(self, interval: float = 0.0005):
        self.interval = interval
        self.peak = 0

    def _sample(self):
        while not self._stop:
            self._max = max(self._max, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self):
        self._base = self._max = rss_bytes()
        self._stop = False
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop = True
        self._thread.join()
        self.peak = max(self._max, rss_bytes()) - self._base
        return False


def probe(config: str,
          size: int,
          batch: int,
          keep_checkpoint: bool = False,
          cfg_options: Optional[dict] = None) -> dict:
    """In this process: {'student'|'teacher'|'distill': peak MB above the level before the step}."""
    from benchmark import build_distiller_from_config

    from mmkd_ext.analysis.step_cost import StepBench, make_batch
    distiller = build_distiller_from_config(config, size, keep_checkpoint, cfg_options).train()
    inputs, samples = make_batch(distiller, batch, (size, size), 'cpu')
    bench = StepBench(distiller, inputs, samples)
    out = {}
    for kind in ('student', 'teacher', 'distill'):
        step = getattr(bench, kind)
        step()  # warm-up: one-time allocations (thread pools, optimizer state)
        with PeakRSS() as peak:
            step()
        out[kind] = peak.peak / MB
    return out


def fresh_process_cpu_peaks(config: str,
                            size: int,
                            batch: int,
                            keep_checkpoint: bool = False,
                            cfg_options: Optional[dict] = None) -> dict:
    """:func:`probe` run in a fresh child process with every large block mmap-ed."""
    env = dict(
        os.environ,
        MALLOC_MMAP_THRESHOLD_='65536',
        MALLOC_TRIM_THRESHOLD_='0',
        OMP_NUM_THREADS=str(torch.get_num_threads()))
    args = json.dumps([config, size, batch, keep_checkpoint, cfg_options])
    proc = subprocess.run([sys.executable, osp.abspath(__file__), args],
                          env=env,
                          capture_output=True,
                          text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith('PEAKS')]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f'The CPU memory probe of {config} failed:\n{proc.stderr[-3000:]}')
    return json.loads(lines[-1][len('PEAKS'):])


if __name__ == '__main__':
    import mmkd_ext  # noqa: F401  (registries)
    print('PEAKS' + json.dumps(probe(*json.loads(sys.argv[1]))))
