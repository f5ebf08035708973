"""The one fenced-code-block parser (model.prompt.extract), used by Fix edits and the evaluation."""

from __future__ import annotations

from model.prompt.extract import CodeBlock, code_blocks, is_language


def test_blocks_in_order_with_their_tags_and_exact_bodies():
    reply = ("Here:\n```Python title=fix.py\ndef f():\n    return 1\n\n```\ntext\n"
             "~~~\nplain\n~~~\n  ```bash\n  ls -l\n  ```\n```js\n```\n")
    assert code_blocks(reply) == [
        CodeBlock("python", "def f():\n    return 1\n\n", True),
        CodeBlock("", "plain\n", True),
        CodeBlock("bash", "  ls -l\n", True),  # an indented fence (inside a list item) counts
        CodeBlock("js", "", True),  # empty blocks are listed; callers skip them
    ]


def test_a_reply_cut_inside_a_block_yields_it_unclosed():
    assert code_blocks("Sure!\n```py\ndef add(a, b):\n    return a + b\n") == [
        CodeBlock("py", "def add(a, b):\n    return a + b\n", False)]
    assert code_blocks("```python\nx = 1\n```") == [CodeBlock("python", "x = 1\n", True)]


def test_only_the_same_fence_at_least_as_long_closes_a_block():
    reply = '````python\ns = """```"""\n```\n~~~~\n````\nafter\n'
    assert code_blocks(reply) == [CodeBlock("python", 's = """```"""\n```\n~~~~\n', True)]
    assert code_blocks("~~~\na\n```\n~~~~~\n") == [CodeBlock("", "a\n```\n", True)]


def test_what_is_not_a_fence():
    assert code_blocks("``inline``\n`` ` ``\nno code here") == []
    assert code_blocks("```not`a`fence\nx\n") == []  # backticks in a backtick fence's info
    assert code_blocks("") == []


def test_crlf_replies_and_tags_of_an_editor_language():
    assert code_blocks("```py\r\nx = 1\r\n```\r\n") == [CodeBlock("py", "x = 1\r\n", True)]
    assert is_language("", "python") and is_language("py3", "python") and is_language("sh", "shellscript")
    assert is_language("go", "go") and not is_language("rust", "python")
