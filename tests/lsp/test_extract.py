"""In-process tests of code extraction from model answers."""

from __future__ import annotations

from lsp_server.extract import extract_code, fit_to_selection, parses

ANSWER = """Here is the fix:

```python
def average(numbers):
    return sum(numbers) / len(numbers)
```

Example:

```bash
python avg.py
```
"""


def test_first_block_in_the_document_language_wins():
    assert extract_code(ANSWER, "python") == (
        "def average(numbers):\n    return sum(numbers) / len(numbers)\n"
    )
    assert extract_code(ANSWER, "shellscript") == "python avg.py\n"


def test_untagged_and_unclosed_blocks_count():
    assert extract_code("```\nx = 1\n```", "python") == "x = 1\n"
    assert extract_code("text\n```py\ny = 2\n", "python") == "y = 2\n"


def test_no_block_means_none():
    assert extract_code("The code is fine as it is.", "python") is None
    assert extract_code("```python\n\n```", "python") is None
    assert extract_code("```rust\nfn main() {}\n```", "python") is None


def test_longer_fences_keep_inner_backticks():
    reply = '````python\ns = """```"""\n````\n'
    assert extract_code(reply, "python") == 's = """```"""\n'


def test_fit_reindents_to_the_selection_and_keeps_its_newline():
    original = "    def f(self):\n        return 1\n"
    code = "def f(self):\n    return 2\n"
    assert fit_to_selection(code, original) == "    def f(self):\n        return 2\n"
    assert fit_to_selection("x = 2\n\n", "x = 1") == "x = 2"


def test_parses_checks_python_only():
    assert parses("def f():\n    return 1\n", "python")
    assert not parses("def f(:\n", "python")
    assert parses("fn main( {", "rust")


def test_fit_keeps_the_blank_lines_around_the_selection():
    from lsp_server.extract import fit_to_selection

    original = "def f(x):\n    return x - 1\n\n\n"
    assert fit_to_selection("def f(x):\n    return x + 1\n", original) == "def f(x):\n    return x + 1\n\n\n"
    assert fit_to_selection("y = 2", "\ny = 1") == "\ny = 2"
    assert fit_to_selection("y = 2\n", "y = 1") == "y = 2"
