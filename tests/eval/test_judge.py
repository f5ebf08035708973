"""Judge aggregation and the OpenAI-compatible judge path.

The remote judge is a stand-in HTTP server in this test (no endpoint is reachable offline):
it checks the wire format and the API key, and simulates a judge that writes garbage.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from training.evaluate import main
from training.evaluation.backends import BackendError, OpenAIBackend
from training.evaluation.judge import pair_answers, summarize


def _row(id_, order, a=None, b=None, category="code"):
    row = {"id": id_, "order": order, "category": category}
    if a is not None:
        row.update(score_a=a, score_b=b)
    else:
        row["unparseable"] = "no pair of scores"
    return row


def test_summary_counts_wins_consistency_and_unparseable():
    judgments = [
        _row("p1", "ab", 8, 4), _row("p1", "ba", 7, 5),  # A wins in both orders: consistent
        _row("p2", "ab", 9, 3), _row("p2", "ba", 2, 8),  # flips with the order: inconsistent
        _row("p3", "ab", 5, 5), _row("p3", "ba"),  # one unparseable: judged from the other
        _row("p4", "ab"), _row("p4", "ba"),  # both unparseable: not judged
        _row("p5", "ab", 3, 9, "feedback"), _row("p5", "ba", 4, 6, "feedback"),
    ]
    s = summarize(judgments)
    assert (s["prompts"], s["judged"]) == (5, 4)
    assert (s["win"], s["tie"], s["loss"]) == (1, 2, 1)  # p2 averages to 5.5 vs 5.5: a tie
    assert s["unparseable"] == 3 and s["verdicts"] == 10
    assert s["both_orders_parsed"] == 3
    assert s["position_consistency"] == pytest.approx(2 / 3)
    assert s["mean_score_a"] == pytest.approx((8 + 7 + 9 + 2 + 5 + 3 + 4) / 7)
    assert s["by_category"]["feedback"] == {"win": 0, "tie": 0, "loss": 1}
    # Decided verdicts won by Assistant 1: p1/ab, p2/ab, p2/ba(B first, B won), p5/ba(B first, B won)
    assert s["first_position_win_share"] == pytest.approx(4 / 6)


class _Judge(BaseHTTPRequestHandler):
    """Answers like an OpenAI chat endpoint (a streamed answer, as vLLM or llama.cpp's server
    send it); the second request of each pair gets garbage: a judge ignoring the format."""

    seen: list = []

    def _send(self, status: int, content_type: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        self._send(200, "application/json", json.dumps({"data": [{"id": "judge-x"}]}).encode())

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Judge.seen.append((self.path, self.headers.get("Authorization"), body))
        user = body["messages"][-1]["content"]
        first = user.split("[The Start of Assistant 1's Answer]")[1]
        if len(_Judge.seen) % 4 == 0:
            text = "Both answers are fine, I suppose."  # a judge that ignores the format
        elif "return s[::-1]" in first.split("[The End")[0]:
            text = "9 3\nAssistant 1 reverses the string; Assistant 2 does not."
        else:
            text = "3 9\nAssistant 2 reverses the string."
        chunks = [{"choices": [{"delta": {"content": piece}, "finish_reason": None}]}
                  for piece in text.split(" ")[:1] + [" " + p for p in text.split(" ")[1:]]]
        chunks.append({"choices": [{"delta": {}, "finish_reason": "stop"}]})
        events = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        self._send(200, "text/event-stream", events.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_url():
    _Judge.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _answers(path, answers, model):
    with path.open("w") as f:
        for i, answer in enumerate(answers):
            f.write(json.dumps({"id": f"p{i}", "category": "code", "task": "code",
                                "prompt": "Reverse a string in Python.", "answer": answer,
                                "settings": {"model": model, "chat_format": "template"}}) + "\n")
    return path


def test_judge_command_against_an_openai_compatible_endpoint(tmp_path, judge_url, monkeypatch, capsys):
    monkeypatch.setenv("STARCHAT_JUDGE_API_KEY", "sk-test-123")
    a = _answers(tmp_path / "a.jsonl", ["return s[::-1]", "return s[::-1]"], "tuned")
    b = _answers(tmp_path / "b.jsonl", ["return s", "print(s)"], "base")
    out = tmp_path / "out"
    code = main(["judge", "--a", str(a), "--b", str(b), "--judge-url", judge_url,
                 "--judge-model", "judge-x", "--out-dir", str(out), "--no-progress"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    # 2 pairs x 2 orders; the 4th verdict was garbage and is counted, not fatal.
    assert summary["verdicts"] == 4 and summary["unparseable"] == 1
    assert (summary["win"], summary["loss"]) == (2, 0)
    assert summary["position_consistency"] == 1.0
    assert summary["mean_score_a"] == 9 and summary["mean_score_b"] == 3
    path, auth, body = _Judge.seen[0]
    assert path == "/v1/chat/completions" and auth == "Bearer sk-test-123"
    assert body["model"] == "judge-x" and body["temperature"] == 0.0 and body["stream"] is True
    assert body["max_tokens"] == 160
    # Both orders were asked: A's answer appears first in one request and second in the other.
    firsts = [b_["messages"][-1]["content"].split("[The End of Assistant 1")[0] for _, _, b_ in _Judge.seen[:2]]
    assert ("return s[::-1]" in firsts[0]) != ("return s[::-1]" in firsts[1])
    report = (out / "judge_report.md").read_text()
    assert "| 2 | 2 | 2 | 0 | 0 |" in report and "1 of 4" in report
    assert (out / "judge_chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A rerun resumes: nothing is asked again.
    asked = len(_Judge.seen)
    assert main(["judge", "--a", str(a), "--b", str(b), "--judge-url", judge_url,
                 "--judge-model", "judge-x", "--out-dir", str(out), "--no-progress"]) == 0
    assert len(_Judge.seen) == asked


def test_unreachable_endpoint_is_a_clear_error(tmp_path):
    backend = OpenAIBackend("http://127.0.0.1:9/v1/chat/completions", "m")
    with pytest.raises(BackendError, match=r"^The server at http://127\.0\.0\.1:9/v1 is unreachable"):
        backend.complete([{"role": "user", "content": "hi"}], {})
    backend.close()
    with pytest.raises(BackendError, match="must start with http"):
        OpenAIBackend("ftp://x", "m")


def test_pairing_needs_shared_ids(tmp_path):
    a = _answers(tmp_path / "a.jsonl", ["x"], "m")
    b = tmp_path / "b.jsonl"
    b.write_text(json.dumps({"id": "other", "answer": "y"}) + "\n")
    with pytest.raises(Exception, match="share no prompt ids"):
        pair_answers(a, b)
