"""Progress of a long evaluation that a person can read, on a terminal and in a log file.

One count over the units of the whole run (every condition x batch, every sweep; under torchrun, this rank's
share), with the rate (always units per minute) and the time left, and one line per finished condition. The time
left weighs the units by their expected cost (`sharding.unit_cost`: an attack unit costs many clean ones), so it
does not swing when cheap and expensive units alternate. On a terminal that is a progress bar redrawn in place;
written to a file (stderr not a terminal: a log, a batch job) it is plain lines at a bounded rate, every
`STEP_PERCENT` % of the units or every `INTERVAL_S` seconds, whichever comes first, never carriage returns. During a
long unit a heartbeat line says, at least every `INTERVAL_S` seconds, what is being computed (`ACTIVITY`: the
condition, the model, the slices and the attack step, which the loop and the attacks keep current).
"""

import math
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import TextIO

from smug_plugin.robustness.activity import ACTIVITY

STEP_PERCENT = 10
INTERVAL_S = 30.0


def duration(seconds: float) -> str:
    """``1:02:03`` / ``2:03``; ``?`` while unknown."""
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' * (count != 1)}"


class Progress:
    """Counts finished units and tells the person watching.

    Parameters
    ----------
    units_per_condition : dict[str, int]
        The units this process computes, per condition id (a condition is finished when all are).
    finished_before : int
        Units of the run finished by an earlier, interrupted run (counted, not timed).
    label : str
        What the lines start with (the rank under torchrun).
    enabled : bool
        False: silent (``--no-progress``).
    stream : TextIO, optional
        Where to write; stderr by default.
    position : int
        The bar's line on a terminal (the rank, so that the ranks' bars do not overwrite each other).
    """

    def __init__(
        self,
        units_per_condition: dict[str, int],
        finished_before: int = 0,
        label: str = "",
        enabled: bool = True,
        stream: TextIO | None = None,
        position: int = 0,
        cost_per_condition: dict[str, float] | None = None,
        heartbeat_s: float | None = INTERVAL_S,
    ):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.prefix = f"[{label}] " if label else ""
        self.units_of = dict(units_per_condition)
        self.left = dict(units_per_condition)
        self.total = finished_before + sum(units_per_condition.values())
        self.done = finished_before
        self.started = time.monotonic()
        self.computed = 0
        self._psnr: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        self._seconds: dict[str, float] = defaultdict(float)  # time spent on each condition's units
        self._unit_started = self.started
        self._next_percent = (100 * self.done // max(self.total, 1)) // STEP_PERCENT * STEP_PERCENT + STEP_PERCENT
        self._last_line = self.started
        self._cost = dict(cost_per_condition or {})  # expected cost of one unit per condition (default 1)
        self._cost_total = sum(self._cost.get(c, 1.0) * n for c, n in units_per_condition.items())
        self._cost_done = 0.0
        self._bar = None
        self._stop = threading.Event()
        self._heartbeat = None
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total,
                initial=self.done,
                desc=f"{self.prefix}robustness",
                unit="unit",
                file=self.stream,
                position=position,
                dynamic_ncols=True,
            )
        if enabled and heartbeat_s:
            self._heartbeat = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True)
            self._heartbeat.start()

    def _beat(self, interval: float) -> None:
        """Every ``interval`` s without another line: what is being computed, and for how long."""
        while not self._stop.wait(interval / 3):
            now = time.monotonic()
            if now - self._last_line >= interval and ACTIVITY.condition:
                self._last_line = now
                self._write(
                    f"{self.prefix}working on {ACTIVITY.describe()} ({duration(now - self._unit_started)} in this unit)"
                )

    def unit_started(self, condition: str, slices: str = "") -> None:
        self._unit_started = time.monotonic()
        ACTIVITY.condition, ACTIVITY.slices, ACTIVITY.model, ACTIVITY.steps = condition, slices, "", 0
        if self._bar is not None:
            self._bar.set_postfix_str(condition)

    def unit_finished(self, condition: str, records: Iterable[dict]) -> None:
        """One unit of ``condition`` is recorded; a line when its condition is finished."""
        self._seconds[condition] += time.monotonic() - self._unit_started
        self.done += 1
        self.computed += 1
        self._cost_done += self._cost.get(condition, 1.0)
        self.left[condition] -= 1
        for record in records:
            self._psnr[condition][record["model"]].append(record["psnr"])
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(1)
        elif self._due():
            self._write(self.status(condition))
        if self.left[condition] == 0:
            self._write(self.condition_summary(condition))

    def _due(self) -> bool:
        now = time.monotonic()
        percent = 100 * self.done / max(self.total, 1)
        if self.done < self.total and percent < self._next_percent and now - self._last_line < INTERVAL_S:
            return False
        self._next_percent = (int(percent) // STEP_PERCENT + 1) * STEP_PERCENT
        self._last_line = now
        return True

    def status(self, condition: str) -> str:
        """``robustness: 12/40 units (30%), 0.52 units/min, 53:50 left, last main/pgd``."""
        elapsed = time.monotonic() - self.started
        rate = self.computed / elapsed if elapsed > 0 else math.nan
        # Time left from the expected cost still to do at the cost rate so far (not the unit count: units differ).
        cost_rate = self._cost_done / elapsed if elapsed > 0 else math.nan
        left = (self._cost_total - self._cost_done) / cost_rate if cost_rate > 0 else math.inf
        per = f"{60 * rate:.3g} units/min"
        percent = 100 * self.done / max(self.total, 1)
        return (
            f"{self.prefix}robustness: {self.done}/{self.total} units ({percent:.0f}%), {per}, "
            f"{duration(left)} left, last {condition}"
        )

    def condition_summary(self, condition: str) -> str:
        """``main/pgd: 6 units in 1:12, mean PSNR smug 28.31 dB, varnet 27.95 dB (12 slices each)``."""
        seconds = self._seconds.pop(condition, 0.0)
        psnr = self._psnr.pop(condition, {})
        means = ", ".join(f"{model} {sum(v) / len(v):.2f} dB" for model, v in psnr.items())
        slices = {len(v) for v in psnr.values()}
        count = f" ({plural(slices.pop(), 'slice')} each)" if len(slices) == 1 else ""
        what = f"mean PSNR {means}{count}" if means else "no model can run it (n/a)"
        units = plural(self.units_of[condition], "unit")
        return f"{self.prefix}{condition}: {units} in {duration(seconds)}, {what}"

    def _write(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        self._stop.set()
        if self._bar is not None:
            self._bar.close()


def throughput_lines(rank_facts: list[dict]) -> list[str]:
    """One line per rank of a sharded run: the units it computed in this session, how fast, and its share of the
    expected cost (in forward passes of a model, `sharding.unit_cost`); balanced ranks end at about the same time."""
    lines = ["throughput per rank (this session):"]
    for facts in rank_facts:
        seconds = max(facts["seconds"], 1e-9)
        lines.append(
            f"  rank {facts['rank']} on {facts['host']} ({facts['device']}): {facts['units']} units in "
            f"{duration(facts['seconds'])}, {facts['units'] / seconds:.3g} units/s, expected cost "
            f"{facts['cost']:.0f} passes ({facts['cost'] / seconds:.3g}/s)"
        )
    return lines
