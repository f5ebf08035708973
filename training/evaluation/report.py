"""Markdown tables and bar charts for the judge, HumanEval and plot results."""

from __future__ import annotations

from pathlib import Path


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def judge_markdown(summary: dict, a_name: str, b_name: str, judge_name: str) -> str:
    """The judge comparison as a markdown report (A's perspective)."""
    s = summary
    lines = [
        f"## Judge comparison: A = `{a_name}` vs B = `{b_name}`",
        "",
        f"Judge: `{judge_name}`; every pair judged twice (A shown first, then B shown first).",
        "",
        "| prompts | judged | A wins | ties | B wins | A win rate | mean score A | mean score B "
        "| position consistency | unparseable verdicts |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {s['prompts']} | {s['judged']} | {s['win']} | {s['tie']} | {s['loss']} "
        f"| {_pct(s['win_rate'])} | {_fmt(s['mean_score_a'])} | {_fmt(s['mean_score_b'])} "
        f"| {_pct(s['position_consistency'])} ({s['both_orders_parsed']} pairs with both verdicts) "
        f"| {s['unparseable']} of {s['verdicts']} |",
        "",
        f"Share of decided verdicts won by the answer shown first: {_pct(s['first_position_win_share'])} "
        "(50% means no position bias).",
        "",
        "| category | A wins | ties | B wins |",
        "|---|---|---|---|",
    ]
    for category, counts in sorted(s["by_category"].items()):
        lines.append(f"| {category} | {counts['win']} | {counts['tie']} | {counts['loss']} |")
    return "\n".join(lines) + "\n"


def judge_chart(summary: dict, path: str | Path, a_name: str, b_name: str) -> Path:
    """Bar chart PNG: outcomes of A vs B on the left, mean scores on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    outcomes = [summary["win"], summary["tie"], summary["loss"]]
    left.bar(["A wins", "tie", "B wins"], outcomes, color=["#4c72b0", "#999999", "#dd8452"])
    left.set_title("Pairwise outcome (both orders)")
    left.set_ylabel("prompts")
    means = [summary["mean_score_a"] or 0, summary["mean_score_b"] or 0]
    right.bar([f"A\n{a_name}", f"B\n{b_name}"], means, color=["#4c72b0", "#dd8452"])
    right.set_ylim(0, 10)
    right.set_title("Mean judge score (1-10)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def humaneval_markdown(result: dict) -> str:
    """The HumanEval result as a markdown report."""
    ks = [key for key in result if key.startswith("pass@")]
    header = "| model | chat format | problems | samples | " + " | ".join(ks) + " | wall time |"
    row = (f"| `{result.get('model')}` | {result.get('chat_format')} | {result['problems']} "
           f"| {result['samples']} | " + " | ".join(_pct(result[k]) for k in ks)
           + f" | {_fmt(result.get('wall_s'), 0)} s |")
    statuses = ", ".join(f"{name}: {count}" for name, count in sorted(result["statuses"].items()))
    return "\n".join([
        "## HumanEval", "", header, "|" + "---|" * (5 + len(ks)), row, "",
        f"Outcomes of the executed samples: {statuses}.", "",
    ])


def plots_markdown(summary: dict) -> str:
    """The plot-task result as a markdown report."""
    lines = [
        "## Plot tasks", "",
        f"{summary['figure']} of {summary['total']} answers produced a figure without error "
        f"({summary['error']} raised, {summary['no_code']} had no code, "
        f"{summary['no_figure']} ran but drew nothing, {summary['timeout']} timed out).", "",
        "| prompt | status | figures | error |", "|---|---|---|---|",
    ]
    for row in summary["rows"]:
        error = row["error"].replace("|", "\\|") or "-"
        lines.append(f"| {row['id']} | {row['status']} | {', '.join(row['figures']) or '-'} | {error} |")
    return "\n".join(lines) + "\n"
