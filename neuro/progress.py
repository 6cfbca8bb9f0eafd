"""Progress bars (tqdm): rate and ETA on a terminal, silent when output is not a terminal."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(total: int | None, desc: str, unit: str = "it", enabled: bool = True):
    """A tqdm bar showing count, rate and ETA; disabled when ``enabled`` is false or stderr is no TTY.

    Counts are shown unscaled (``0/54000``, not ``0.00/54.0k``)."""
    disable = (not enabled) or not sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True, leave=False, unit_scale=False)
