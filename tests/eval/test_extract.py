"""Code extraction from model replies: fences, unclosed blocks, bare code, raw completions."""

from training.evaluation.extract import defines, extract_python, truncate_completion


def test_picks_the_python_block_that_defines_the_entry_point():
    reply = (
        "First a helper:\n```python\ndef helper(x):\n    return x * 2\n```\n"
        "Then the answer:\n```py\ndef solve(x):\n    return helper(x) + 1\n```\n"
        "And in JS:\n```javascript\nconst solve = x => x;\n```\n"
    )
    assert extract_python(reply, "solve") == "def solve(x):\n    return helper(x) + 1\n"
    # Without an entry point the longest python block wins.
    assert extract_python(reply).startswith("def solve(x):")


def test_unclosed_block_from_a_reply_cut_by_the_token_limit():
    reply = "Sure!\n```python\ndef add(a, b):\n    return a + b\n"
    assert extract_python(reply, "add") == "def add(a, b):\n    return a + b\n"
    assert extract_python("```python\nx = 1   \n\n```\nprose") == "x = 1\n"


def test_untagged_and_tilde_fences_count_as_python():
    assert extract_python("~~~\nprint('hi')\n~~~") == "print('hi')\n"
    assert extract_python("```\nimport os\n```") == "import os\n"


def test_bare_code_without_fences_and_trailing_prose_is_dropped():
    reply = "def f(x):\n    return x + 1\nThis function adds one to its argument."
    assert extract_python(reply) == "def f(x):\n    return x + 1\n"
    assert extract_python("Here you go:\nimport math\nprint(math.pi)\n") == "import math\nprint(math.pi)\n"


def test_no_code_at_all_or_only_other_languages():
    assert extract_python("I cannot help with that.") is None
    assert extract_python("") is None
    assert extract_python("```rust\nfn main() {}\n```") is None


def test_truncate_raw_completion_at_the_next_top_level_statement():
    completion = "    return sorted(x)\n\n\ndef other():\n    pass\n"
    assert truncate_completion(completion) == "    return sorted(x)\n\n"
    assert truncate_completion("    return 1\nprint(f())") == "    return 1"
    assert truncate_completion("    return 1\n") == "    return 1\n"


def test_defines_top_level_function_only():
    assert defines("import os\n\ndef main():\n    pass\n", "main")
    assert not defines("class A:\n    def main(self):\n        pass\n", "main")
    assert defines("def main(:\n  broken", "main")  # falls back to a pattern on bad syntax
