"""The benchmark script runs and reports every figure it promises (one repeat; the figures are not judged here)."""

import json

from bench import run as bench


def test_overhead_sections_report_their_ratios(tiny_model, tmp_path):
    wrapper = bench.wrapper_overhead(tiny_model, 1, tmp_path)
    app = bench.app_overhead(tiny_model, 1, tmp_path, model_name="tiny")
    assert wrapper["wrapper ratio"] > 0 and app["app ratio"] > 0
    assert 0 < app["gradio + client, idle answer as long (s)"] < app["app turn via gradio_client (s)"]
    assert app["app ratio less gradio + client"] < app["app ratio"]
    assert app["files fetched per app turn"] == 1  # the image the turn asked for, fetched as a browser does


def test_compare_prints_new_over_old(tmp_path, capsys):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps({"model": "tiny", "wrapper": {"wrapper ratio": 2.0}}))
    new.write_text(json.dumps({"model": "tiny", "wrapper": {"wrapper ratio": 1.0}}))
    assert bench.main(["--compare", str(old), str(new)]) == 0
    assert "x0.500" in capsys.readouterr().out
