"""bench.photonic_table's digits selection: the in-situ row is chosen on validation accuracy only."""

from __future__ import annotations

import json

import pytest

from bench.photonic_table import DIGITS, DIGITS_KEYS, main, pick_rows, select_by_validation


def _rec(key: str, seed: int, val: float, test: float, *, by_label: bool = True) -> dict:
    return {"part": "digits", "row": DIGITS_KEYS[key] if by_label else key, "seed": seed,
            "val_accuracy": val, "test_accuracy": test}


def _records() -> list[dict]:
    # mfff_fixed: best TEST, worse VALIDATION; mfff_spsa_hwlr_rg: best validation, worse test.
    return [
        _rec("insilico", 0, 0.98, 0.97), _rec("insilico", 1, 0.99, 0.98), _rec("insilico", 2, 0.97, 0.99),
        _rec("mfff_fixed", 0, 0.90, 0.97), _rec("mfff_fixed", 1, 0.91, 0.98), _rec("mfff_fixed", 2, 0.92, 0.99),
        _rec("mfff_spsa_hwlr_rg", 0, 0.95, 0.93), _rec("mfff_spsa_hwlr_rg", 1, 0.96, 0.94),
        _rec("mfff_spsa_hwlr_rg", 2, 0.97, 0.95, by_label=False),
        # highest validation of all, but seed 2 is missing: may not be chosen
        _rec("mfff_spsa_hwlr", 0, 1.0, 0.5), _rec("mfff_spsa_hwlr", 1, 1.0, 0.5),
    ]


def test_choice_ignores_test_accuracy_and_incomplete_rows():
    sel = select_by_validation(_records(), ("mfff_fixed", "mfff_spsa_hwlr", "mfff_spsa_hwlr_rg"), "insilico")
    assert sel["seeds"] == [0, 1, 2]
    assert sel["ready"] == ["mfff_fixed", "mfff_spsa_hwlr_rg"]
    assert sel["chosen"] == "mfff_spsa_hwlr_rg"
    assert sel["mean_val"]["mfff_spsa_hwlr_rg"] == pytest.approx(0.96)
    # test gaps (points): 93-97, 94-98, 95-99
    assert sel["gaps"] == pytest.approx([-4.0, -4.0, -4.0])
    assert sel["gap"] == pytest.approx(-4.0)


def test_tie_in_validation_goes_to_the_earlier_candidate():
    recs = [_rec("insilico", 0, 0.9, 0.9), _rec("mfff_fixed", 0, 0.8, 0.7), _rec("mfff_fixed_rg", 0, 0.8, 0.95)]
    assert select_by_validation(recs, ("mfff_fixed", "mfff_fixed_rg"), "insilico")["chosen"] == "mfff_fixed"
    assert select_by_validation(recs, ("mfff_fixed_rg", "mfff_fixed"), "insilico")["chosen"] == "mfff_fixed_rg"


def test_missing_baseline_or_candidates_is_a_plain_error():
    with pytest.raises(ValueError, match="baseline row 'insilico'"):
        select_by_validation([_rec("mfff_fixed", 0, 0.9, 0.9)], ("mfff_fixed",), "insilico")
    with pytest.raises(ValueError, match="every seed"):
        select_by_validation([_rec("insilico", 0, 0.9, 0.9)], ("mfff_fixed",), "insilico")


def test_select_cli_prints_both_splits(tmp_path, capsys):
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _records()))
    assert main(["--select", str(path)]) == 0
    out = capsys.readouterr().out
    assert "chosen by mean validation accuracy: mfff_spsa_hwlr_rg (test vs insilico: -4.00 points)" in out
    assert "| **mfff_spsa_hwlr_rg** (chosen) | 95.00 / 93.00 | 96.00 / 94.00 | 97.00 / 95.00 | 96.00 ± 1.00 " in out
    assert "| -4.00 (-4.00 / -4.00 / -4.00) |" in out
    assert "dfa_candidates: no records of the baseline row 'bptt'" in out


def test_row_keys_pick_exactly_one_row_and_substrings_keep_working():
    assert len(DIGITS_KEYS) == len(DIGITS) == len(set(DIGITS_KEYS.values()))
    assert pick_rows(["mfff_fixed_rg"]) == [DIGITS_KEYS["mfff_fixed_rg"]]
    # the documented substring "readout_grad" still means the SPSA + hardware_lr + readout_grad row only
    assert pick_rows(["readout_grad"]) == [DIGITS_KEYS["mfff_spsa_hwlr_rg"]]
    assert pick_rows(["phases fixed"]) == [DIGITS_KEYS["mfff_fixed"]]
    assert pick_rows(None) == list(DIGITS)
