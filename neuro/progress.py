"""Progress bars (tqdm): rate and ETA on a terminal, silent when output is not a terminal."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(total: int | None, desc: str, unit: str = "it", enabled: bool = True):
    """A tqdm bar showing count, rate and ETA; disabled when ``enabled`` is false or stderr is no TTY.

    Counts are shown unscaled (``0/54000``, not ``0.00/54.0k``)."""
    disable = (not enabled) or not sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True, leave=False, unit_scale=False)


class ticking:
    """A bar for work that reports no progress of its own (e.g. one Lava run in another process): it shows the
    elapsed seconds against ``expected_s`` (an estimate, not a limit) and closes when the block ends.

        with ticking("Lava run", expected_s=40):
            result = run_lava_batch(...)
    """

    def __init__(self, desc: str, expected_s: float, enabled: bool = True, interval_s: float = 0.5) -> None:
        self.desc, self.expected_s, self.enabled, self.interval_s = (
            desc,
            max(float(expected_s), 1.0),
            enabled,
            interval_s,
        )

    def __enter__(self):
        import threading
        import time

        self._bar = tqdm(
            total=round(self.expected_s),
            desc=self.desc,
            unit="s",
            leave=False,
            dynamic_ncols=True,
            disable=(not self.enabled) or not sys.stderr.isatty(),
            bar_format="{desc}: {n_fmt}/{total_fmt} s (expected) {bar} ",
        )
        self._stop = threading.Event()
        start = time.perf_counter()

        def tick() -> None:
            while not self._stop.wait(self.interval_s):
                elapsed = round(time.perf_counter() - start)
                if elapsed > self._bar.total:
                    self._bar.total = elapsed
                self._bar.n = elapsed
                self._bar.refresh()

        self._thread = threading.Thread(target=tick, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._bar.close()
