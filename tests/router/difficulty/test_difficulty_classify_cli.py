"""``switchyard classify`` end to end on small temp files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from switchyard.cli import main


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_score_round_trip_keeps_fields(tmp_path: Path, small_model_path: Path) -> None:
    source = _write(
        tmp_path / "in.jsonl",
        [json.dumps({"id": 1, "prompt": "What is 2 + 2?"}), "", json.dumps({"id": 2, "prompt": "Prove it."})],
    )
    out = tmp_path / "out.jsonl"
    assert (
        main(["classify", "--input", str(source), "--output", str(out), "--model", str(small_model_path)])
        == 0
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [1, 2]
    assert all(0.0 <= r["score"] <= 1.0 for r in rows)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"text": "x"}), "missing string field 'prompt'"),
        ("[1]", "expected a JSON object"),
    ],
)
def test_bad_input_names_the_line(
    tmp_path: Path, line: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _write(tmp_path / "in.jsonl", [json.dumps({"prompt": "ok"}), line])
    out = tmp_path / "out.jsonl"
    assert main(["classify", "--input", str(source), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"in.jsonl:2: {message}" in err
    assert not out.exists()


def test_evaluate_prints_metrics_and_plots(
    tmp_path: Path, small_model_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        json.dumps({"prompt": f"question {i} " * (i + 1), "weak_correct": i % 3 != 0, "strong_correct": True})
        for i in range(30)
    ]
    source = _write(tmp_path / "labelled.jsonl", lines)
    plot = tmp_path / "curve.png"
    args = ["classify", "--evaluate", str(source), "--model", str(small_model_path), "--plot", str(plot)]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) >= {"apgr", "cpt20", "cpt50", "cpt80"}
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_evaluate_rejects_missing_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _write(tmp_path / "labelled.jsonl", [json.dumps({"prompt": "x", "weak_correct": True})])
    assert main(["classify", "--evaluate", str(source)]) == 2
    assert "labelled.jsonl:1: field 'strong_correct'" in capsys.readouterr().err
