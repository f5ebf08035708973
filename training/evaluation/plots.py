"""`starchat eval plots`: run each plot answer headless in the sandbox and count figures."""

from __future__ import annotations

import logging
from pathlib import Path

from .extract import extract_python
from .sandbox import run_python

log = logging.getLogger(__name__)

TIMEOUT_S = 60.0  # importing pandas + seaborn alone takes seconds on a shared 2-core box
MEMORY_MB = 2048


def run_plots(answers: list[dict], out_dir: str | Path, *, category: str = "plot", unsafe: bool = False) -> dict:
    """Execute the code of every answer in `category`; save PNGs under `out_dir`; count."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for answer in answers:
        if answer.get("category") != category:
            continue
        code = extract_python(answer.get("answer", ""))
        if code is None:
            rows.append({"id": answer["id"], "status": "no_code", "figures": [], "error": ""})
            continue
        result = run_python(code, timeout_s=TIMEOUT_S, memory_mb=MEMORY_MB, save_figures=True,
                            collect=(".png",), unsafe=unsafe)
        figures = []
        for name, data in result.files.items():
            target = out_dir / f"{answer['id']}_{Path(name).name}"
            target.write_bytes(data)
            figures.append(target.name)
        if result.status == "passed":
            status = "figure" if figures else "no_figure"
        else:
            status = "timeout" if result.status == "timeout" else "error"
        error = (result.stderr.strip().splitlines() or [""])[-1][:300] if status == "error" else ""
        rows.append({"id": answer["id"], "status": status, "figures": figures, "error": error})
    counts = {key: sum(r["status"] == key for r in rows)
              for key in ("figure", "no_figure", "error", "timeout", "no_code")}
    return {"total": len(rows), **counts, "rows": rows}
