"""`starchat eval` commands: bad input exits 2 with a sentence; plots run real code."""

import json

import pytest

from training.evaluate import main


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "--out", "x.jsonl", "--limit", "0"],
        ["generate"],  # --out missing
        ["humaneval", "--samples", "many"],
        ["judge", "--a", "a", "--b", "b"],  # no judge given
        ["judge", "--a", "a", "--b", "b", "--judge", "default", "--judge-url", "http://x"],
        ["nonsense"],
    ],
)
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_bad_files_exit_2_with_one_sentence(tmp_path, capsys):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": 1,\n')
    cases = [
        (["generate", "--prompts", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o.jsonl")], "does not exist"),
        (["generate", "--prompts", str(broken), "--out", str(tmp_path / "o.jsonl")], "not valid JSON"),
        (["plots", "--answers", str(broken)], "not valid JSON"),
        (["judge", "--a", str(broken), "--b", str(broken), "--judge-url", "http://127.0.0.1:9"], "not valid JSON"),
        (["generate", "--model", str(tmp_path / "no-such-model"), "--out", str(tmp_path / "o.jsonl")], ""),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("starchat eval") and message in err
        assert "Traceback" not in err and len(err.splitlines()) == 1


def test_plots_command_runs_each_answer_and_counts_figures(tmp_path, capsys):
    good = (
        "Here you go:\n```python\nimport pandas as pd\nimport seaborn as sns\nimport matplotlib.pyplot as plt\n"
        "df = pd.DataFrame({'year': [2019, 2020, 2021], 'sales': [120, 135, 160]})\n"
        "sns.set_style('whitegrid')\nsns.barplot(data=df, x='year', y='sales')\nplt.title('Sales')\nplt.show()\n```\n"
    )
    saved = "```python\nimport matplotlib.pyplot as plt\nplt.plot([1, 2], [3, 4])\nplt.savefig('chart.png')\n```"
    broken = "```python\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1])\nplt.show()\n```"
    answers = tmp_path / "answers.jsonl"
    rows = [("plot-1", good), ("plot-2", saved), ("plot-3", broken), ("plot-4", "I cannot draw."),
            ("code-1", "```python\nprint(1)\n```")]
    answers.write_text("".join(
        json.dumps({"id": i, "category": "plot" if i.startswith("plot") else "algorithms", "answer": a}) + "\n"
        for i, a in rows))
    out = tmp_path / "plots"
    assert main(["plots", "--answers", str(answers), "--out-dir", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["total"] == 4  # the non-plot answer is not run
    assert (summary["figure"], summary["error"], summary["no_code"]) == (2, 1, 1)
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["plot-1_figure_1.png", "plot-2_chart.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in out.glob("*.png"))
    report = (out / "report.md").read_text()
    assert "2 of 4 answers produced a figure" in report


def test_without_a_sandbox_the_code_runners_refuse_unless_told(tmp_path, capsys, monkeypatch):
    """Where bubblewrap cannot run (simulated here: the probe answers "none"), humaneval and
    plots exit 2 with one sentence before generating anything; --unsafe-no-sandbox runs."""
    from training.evaluation import sandbox

    monkeypatch.setattr(sandbox, "isolation", lambda: sandbox.Isolation("none", "bubblewrap (bwrap) is not installed"))
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"id": "plot-1", "category": "plot",
                                   "answer": "```python\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\n```"}) + "\n")
    for argv in (["humaneval", "--model", "no/such/model", "--limit", "1"], ["plots", "--answers", str(answers)]):
        assert main([*argv, "--out-dir", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "needs a sandbox and none is available" in err
        assert "--unsafe-no-sandbox" in err
    assert not (tmp_path / "out").exists()
    assert main(["plots", "--answers", str(answers), "--out-dir", str(tmp_path / "out"), "--unsafe-no-sandbox"]) == 0
    assert json.loads(capsys.readouterr().out)["figure"] == 1
