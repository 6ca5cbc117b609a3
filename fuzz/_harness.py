"""The part every fuzzer here shares: libFuzzer's arguments, crash records, RSS and the report.

A fuzzer gives a name, a check (one input; any exception is a finding), a seed-corpus writer
and its max_len, then calls `run()`. Each finding is recorded once (crash-<sha1> under
-artifact_prefix, default fuzz/artifacts/) and the run goes on; RSS is sampled every
20,000 executions or 10 s, growth counted from the first sample (after imports and the
corpus load). At the end
(-max_total_time=S, our own clock, so the summary prints; libFuzzer's limit is the backstop)
it prints executions, findings, RSS and one JSON line, and exits 1 if anything crashed or RSS
grew by more than --max-rss-growth-mb (64 by default).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RSS_CHECK_EVERY = 20_000  # executions between RSS samples, or
RSS_CHECK_S = 10.0  # seconds, for a slow check


def rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def write_seeds(into: Path, seeds: list[bytes]) -> int:
    """The seeds as files named by their SHA-1 in `into` (a libFuzzer corpus); how many."""
    into.mkdir(parents=True, exist_ok=True)
    for s in seeds:
        (into / hashlib.sha1(s).hexdigest()).write_bytes(s)
    return len(seeds)


class Harness:
    def __init__(self, name: str, check: Callable[[bytes], None],
                 seed_corpus: Callable[[Path], int], max_len: int) -> None:
        self.name = name
        self.check = check
        self.seed_corpus = seed_corpus
        self.max_len = max_len
        self.counts: Counter[str] = Counter()  # the fuzzer's own tallies, in the report
        self.execs = 0
        self.crashes: dict[str, str] = {}
        self.start = time.monotonic()
        self.max_total_time: float | None = None
        self.max_rss_growth_mb = 64.0
        self.artifacts = ROOT / "fuzz" / "artifacts"
        self.rss_start_kb: int | None = None
        self.rss_samples_kb: list[int] = []
        self.last_sample = self.start

    def test_one_input(self, data: bytes) -> None:
        self.execs += 1
        try:
            self.check(data)
        except Exception as exc:  # noqa: BLE001 - every exception here is a finding to record
            digest = hashlib.sha1(data).hexdigest()
            if digest not in self.crashes:
                self.crashes[digest] = f"{type(exc).__name__}: {exc}"
                self.artifacts.mkdir(parents=True, exist_ok=True)
                (self.artifacts / f"crash-{digest}").write_bytes(data)
                sys.stderr.write(f"\n== crash {digest}\n{traceback.format_exc()}\n")
        now = time.monotonic()
        if self.execs % RSS_CHECK_EVERY == 0 or now - self.last_sample >= RSS_CHECK_S:
            self.last_sample = now
            self.rss_samples_kb.append(rss_kb())
            if self.rss_start_kb is None:
                self.rss_start_kb = self.rss_samples_kb[-1]
        if self.max_total_time is not None and now - self.start >= self.max_total_time:
            self.finish()

    def finish(self) -> None:
        elapsed = time.monotonic() - self.start
        end = rss_kb()
        start = self.rss_start_kb if self.rss_start_kb is not None else end
        growth_mb = (end - start) / 1024
        samples = self.rss_samples_kb or [end]
        half = samples[len(samples) // 2]
        report = {
            "executions": self.execs,
            **self.counts,
            "elapsed_s": round(elapsed, 1),
            "execs_per_s": round(self.execs / elapsed) if elapsed else 0,
            "crashes": len(self.crashes),
            "rss_start_mb": round(start / 1024, 1),
            "rss_end_mb": round(end / 1024, 1),
            "rss_growth_mb": round(growth_mb, 1),
            # Early on, libFuzzer's corpus and the code's caches fill up; a leak shows as
            # growth in the second half too.
            "rss_growth_second_half_mb": round((end - half) / 1024, 1),
            "peak_rss_mb": round(max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, end,
                                     *self.rss_samples_kb) / 1024, 1),
        }
        print(f"\n== {self.name} fuzz summary", flush=True)
        tallies = ", ".join(f"{v} {k}" for k, v in self.counts.items())
        print(f"executions: {self.execs} in {elapsed:.0f} s ({report['execs_per_s']}/s)"
              + (f", {tallies}" if tallies else ""))
        print(f"crashes: {len(self.crashes)}")
        for digest, what in self.crashes.items():
            print(f"  {self.artifacts / ('crash-' + digest)}: {what}")
        print(f"RSS start {report['rss_start_mb']} MiB, end {report['rss_end_mb']} MiB "
              f"(second half {report['rss_growth_second_half_mb']:+} MiB), "
              f"peak {report['peak_rss_mb']} MiB")
        print(json.dumps(report), flush=True)
        # libFuzzer owns the process and exits without running Python's atexit: leave directly.
        os._exit(1 if self.crashes or growth_mb > self.max_rss_growth_mb else 0)

    def run(self, argv: list[str]) -> None:
        import atheris

        argv = list(argv)
        for a in list(argv):
            if a.startswith("--max-rss-growth-mb="):
                self.max_rss_growth_mb = float(a.split("=", 1)[1])
                argv.remove(a)
        for a in argv[1:]:
            if a.startswith("-max_total_time="):
                self.max_total_time = float(a.split("=", 1)[1])
            elif a.startswith("-artifact_prefix="):
                self.artifacts = Path(a.split("=", 1)[1])
        if not [a for a in argv[1:] if not a.startswith("-")]:
            # A scratch corpus: libFuzzer writes what it finds into the first directory, and
            # the repository should not grow with every run.
            work = Path(tempfile.mkdtemp(prefix=f"{self.name.replace(' ', '-')}-fuzz-"))
            print(f"seed corpus: {self.seed_corpus(work)} inputs in {work}", flush=True)
            argv.append(str(work))
        if self.max_total_time is not None:
            argv = [a for a in argv if not a.startswith("-max_total_time=")]
            argv.append(f"-max_total_time={int(self.max_total_time) + 30}")
        if not any(a.startswith("-max_len=") for a in argv):
            argv.append(f"-max_len={self.max_len}")
        self.start = self.last_sample = time.monotonic()
        atheris.Setup(argv, self.test_one_input)
        atheris.Fuzz()
        self.finish()
