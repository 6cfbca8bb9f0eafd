"""Every kind of report page is well-formed HTML whose images exist and decode.

Report kinds: a spiking run (BPTT), a forward-forward run (its goodness section), a physical run
(accuracy against device time), and a Loihi deployment (twin only, so no Lava is needed here; the Lava
page is the same template with one more trace, checked in test_lava_deploy.py).
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import pytest

from neuro import workflow

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Checker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            src = dict(attrs).get("src")
            if not src:
                self.problems.append("an <img> without src")
            else:
                self.images.append(src)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes <{self.stack[-1] if self.stack else 'nothing'}>")
            if tag in self.stack:
                while self.stack and self.stack.pop() != tag:
                    pass
            return
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def check_page(path: Path) -> str:
    """Assert ``path`` is balanced HTML whose images decode; return its visible text."""
    checker = _Checker()
    checker.feed(path.read_text(encoding="utf-8"))
    checker.close()
    assert checker.problems == [], checker.problems
    assert checker.stack == [], f"unclosed tags: {checker.stack}"
    assert checker.images, "a report without figures"
    for src in checker.images:
        image = path.parent / src
        assert image.is_file(), src
        pixels = matplotlib.image.imread(image)
        assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50, (src, pixels.shape)
    return " ".join(checker.text)


def _train(tmp_path: Path, name: str, **sections) -> Path:
    config = {
        "run": {"name": name, "out_dir": str(tmp_path), "progress": False},
        "train": {"epochs": 2, "batch_size": 32},
        "data": {"dataset": "digits", "limit": 160},
        **sections,
    }
    run, _ = workflow.train(config, echo=lambda *a: None)
    return run.path


@pytest.mark.parametrize(
    ("kind", "sections", "must_show"),
    [
        ("spiking", {"model": {"hidden": [16], "time_steps": 6}}, ["Spike raster", "Learning curves"]),
        ("ff", {"model": {"kind": "mlp", "hidden": [32, 32]}, "rule": {"name": "ff"}}, ["FF goodness"]),
        (
            "physical",
            {
                "model": {"kind": "physical_mlp", "physical": [16], "hidden": [16, 16]},
                "rule": {"name": "mfff", "variant": "contrastive"},
            },
            ["Accuracy vs device time"],
        ),
    ],
)
def test_run_reports_are_well_formed(tmp_path, kind, sections, must_show):
    run = _train(tmp_path, kind, **sections)
    text = check_page(run / "report.html")
    header, *rows = (run / "metrics.csv").read_text().splitlines()
    assert header.startswith("event,epoch") and len(rows) == 2  # one row per epoch
    for heading in (*must_show, "Configuration (resolved; config.toml)", "test accuracy (%)", "code"):
        assert heading in text, heading


def test_deployment_report_is_well_formed(tmp_path):
    from neuro.deploy import deploy_loihi

    run = _train(tmp_path, "loihi", model={"hidden": [16], "time_steps": 6, "lif": {"reset": "zero"}})
    deploy_loihi(run, samples=8, lava=False, echo=lambda *a: None)
    text = check_page(run / "deploy-loihi" / "twin" / "report.html")
    assert "twin accuracy (%)" in text


def test_tensorboard_logging_is_optional_with_a_clear_error(tmp_path):
    from neuro.errors import ConfigError

    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="pip install tensorboard"):
            _train(tmp_path, "tb", model={"hidden": [8], "time_steps": 4}, train={"epochs": 1, "tensorboard": True})
    else:
        run = _train(tmp_path, "tb", model={"hidden": [8], "time_steps": 4}, train={"epochs": 1, "tensorboard": True})
        assert any((run / "tensorboard").iterdir())
