"""Build training/data/code_assistant.jsonl: short English code-assistant dialogues.

Written for this project and released under CC0-1.0 (see README.md here). Every answer
is hand-written below; the script only combines phrasings, so the output is reproducible:
    python training/data/build_code_assistant.py   # rewrites code_assistant.jsonl
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).with_name("code_assistant.jsonl")
SYSTEM = (
    "You are StarChat, a helpful coding assistant. Answer briefly and correctly, "
    "show code in fenced blocks, and say so when you are unsure."
)

# (task phrase, function code, one-line note)
FUNCTIONS = [
    ("reverses a string", "def reverse_string(s):\n    return s[::-1]", "Slicing with a step of -1 walks the string backwards."),
    ("checks whether a number is even", "def is_even(n):\n    return n % 2 == 0", "A number is even when dividing by 2 leaves no remainder."),
    ("returns the largest item of a list", "def largest(items):\n    return max(items)", "`max` raises ValueError on an empty list, so check for that first if it can happen."),
    ("sums a list of numbers", "def total(numbers):\n    return sum(numbers)", "The built-in `sum` returns 0 for an empty list."),
    ("counts the vowels in a string", "def count_vowels(text):\n    return sum(1 for ch in text.lower() if ch in \"aeiou\")", "Lower-casing first makes the count case-insensitive."),
    ("checks whether a string is a palindrome", "def is_palindrome(s):\n    s = s.lower()\n    return s == s[::-1]", "It compares the string with its reverse, ignoring case."),
    ("computes the factorial of n", "def factorial(n):\n    result = 1\n    for i in range(2, n + 1):\n        result *= i\n    return result", "A loop avoids Python's recursion limit for large n."),
    ("returns the n-th Fibonacci number", "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a", "The iterative version runs in linear time."),
    ("removes duplicates from a list while keeping order", "def unique(items):\n    return list(dict.fromkeys(items))", "Dicts keep insertion order, so the first occurrence of each item wins."),
    ("flattens a list of lists", "def flatten(lists):\n    return [x for sub in lists for x in sub]", "This flattens one level deep."),
    ("counts how often each word appears in a text", "from collections import Counter\n\ndef word_counts(text):\n    return Counter(text.lower().split())", "`Counter` is a dict subclass, so you can look counts up by word."),
    ("checks whether a number is prime", "def is_prime(n):\n    if n < 2:\n        return False\n    i = 2\n    while i * i <= n:\n        if n % i == 0:\n            return False\n        i += 1\n    return True", "Testing divisors up to the square root is enough."),
    ("converts Celsius to Fahrenheit", "def celsius_to_fahrenheit(c):\n    return c * 9 / 5 + 32", "For example, 100 C gives 212 F."),
    ("returns the average of a list of numbers", "def average(numbers):\n    if not numbers:\n        raise ValueError(\"average of an empty list\")\n    return sum(numbers) / len(numbers)", "An explicit error is clearer than a ZeroDivisionError."),
    ("reads a text file and returns its lines", "def read_lines(path):\n    with open(path, encoding=\"utf-8\") as f:\n        return f.read().splitlines()", "`splitlines` drops the newline characters."),
    ("merges two dictionaries", "def merge(a, b):\n    return {**a, **b}", "Keys in `b` win when both dicts have them; in Python 3.9+ you can also write `a | b`."),
    ("returns the greatest common divisor of two integers", "def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return abs(a)", "This is Euclid's algorithm; `math.gcd` does the same."),
    ("capitalizes the first letter of every word", "def title_words(text):\n    return \" \".join(w[:1].upper() + w[1:] for w in text.split())", "Unlike `str.title`, this leaves the rest of each word unchanged."),
    ("splits a list into chunks of size n", "def chunks(items, n):\n    return [items[i:i + n] for i in range(0, len(items), n)]", "The last chunk may be shorter than n."),
    ("sorts a list of dictionaries by a key", "def sort_by(rows, key):\n    return sorted(rows, key=lambda row: row[key])", "`sorted` returns a new list and keeps the original untouched."),
    ("checks whether two strings are anagrams", "def is_anagram(a, b):\n    return sorted(a) == sorted(b)", "Two words are anagrams when their sorted letters match."),
    ("returns the second largest number in a list", "def second_largest(numbers):\n    values = sorted(set(numbers))\n    if len(values) < 2:\n        raise ValueError(\"need two distinct numbers\")\n    return values[-2]", "Using a set ignores repeated maximums."),
    ("converts a binary string to an integer", "def binary_to_int(bits):\n    return int(bits, 2)", "`int` accepts a base as its second argument."),
    ("returns the squares of the numbers from 1 to n", "def squares(n):\n    return [i * i for i in range(1, n + 1)]", "A list comprehension keeps it on one line."),
    ("finds the index of an item with binary search", "def binary_search(items, target):\n    lo, hi = 0, len(items) - 1\n    while lo <= hi:\n        mid = (lo + hi) // 2\n        if items[mid] == target:\n            return mid\n        if items[mid] < target:\n            lo = mid + 1\n        else:\n            hi = mid - 1\n    return -1", "The list must be sorted; -1 means the target is missing."),
    ("returns the words of a sentence in reverse order", "def reverse_words(sentence):\n    return \" \".join(reversed(sentence.split()))", "`split()` without arguments also collapses repeated spaces."),
    ("counts the lines of a file", "def count_lines(path):\n    with open(path, encoding=\"utf-8\") as f:\n        return sum(1 for _ in f)", "Iterating the file reads one line at a time, so big files are fine."),
    ("checks whether a year is a leap year", "def is_leap(year):\n    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)", "Century years are leap years only when divisible by 400."),
    ("transposes a matrix given as a list of lists", "def transpose(matrix):\n    return [list(row) for row in zip(*matrix)]", "`zip(*matrix)` pairs up the columns."),
    ("removes all whitespace from a string", "def strip_spaces(text):\n    return \"\".join(text.split())", "This removes spaces, tabs and newlines."),
]

# (language, task phrase, code)
OTHER_LANGUAGES = [
    ("JavaScript", "reverses a string", "function reverseString(s) {\n  return s.split(\"\").reverse().join(\"\");\n}"),
    ("JavaScript", "sums an array of numbers", "function sum(numbers) {\n  return numbers.reduce((a, b) => a + b, 0);\n}"),
    ("JavaScript", "removes duplicates from an array", "function unique(items) {\n  return [...new Set(items)];\n}"),
    ("TypeScript", "returns the largest number in an array", "function largest(numbers: number[]): number {\n  return Math.max(...numbers);\n}"),
    ("Go", "reverses a slice of ints in place", "func reverse(s []int) {\n\tfor i, j := 0, len(s)-1; i < j; i, j = i+1, j-1 {\n\t\ts[i], s[j] = s[j], s[i]\n\t}\n}"),
    ("Rust", "sums a slice of integers", "fn sum(values: &[i64]) -> i64 {\n    values.iter().sum()\n}"),
    ("Bash", "counts the files in a directory", "count_files() {\n  find \"$1\" -maxdepth 1 -type f | wc -l\n}"),
    ("SQL", "counts the orders of each customer", "SELECT customer_id, COUNT(*) AS orders\nFROM orders\nGROUP BY customer_id;"),
    ("C", "returns the length of a string", "size_t length(const char *s) {\n    size_t n = 0;\n    while (s[n] != '\\0') n++;\n    return n;\n}"),
    ("Java", "checks whether a number is even", "static boolean isEven(int n) {\n    return n % 2 == 0;\n}"),
]

# (buggy code, fixed code, explanation)
BUGS = [
    ("def add(a, b):\n    return a - b", "def add(a, b):\n    return a + b", "The function subtracted instead of adding."),
    ("def last(items):\n    return items[len(items)]", "def last(items):\n    return items[-1]", "Indexing with `len(items)` is one past the end and raises IndexError."),
    ("for i in range(10)\n    print(i)", "for i in range(10):\n    print(i)", "A `for` statement needs a colon at the end of the line."),
    ("def greet(name):\n    return \"Hello, \" + name + 1", "def greet(name):\n    return \"Hello, \" + name + \"!\"", "You cannot add an int to a str; use a string instead."),
    ("def is_empty(items):\n    return len(items) = 0", "def is_empty(items):\n    return len(items) == 0", "`=` is assignment; comparison needs `==`."),
    ("def append_item(item, items=[]):\n    items.append(item)\n    return items", "def append_item(item, items=None):\n    if items is None:\n        items = []\n    items.append(item)\n    return items", "A mutable default list is shared between calls; use None and create the list inside."),
    ("numbers = [1, 2, 3]\nfor n in numbers:\n    if n % 2 == 0:\n        numbers.remove(n)", "numbers = [1, 2, 3]\nnumbers = [n for n in numbers if n % 2 != 0]", "Removing items from a list while iterating over it skips elements; build a new list instead."),
    ("def average(values):\n    return sum(values) / len(value)", "def average(values):\n    return sum(values) / len(values)", "`value` is a typo for `values`, which raises NameError."),
    ("with open(\"data.txt\") as f:\ndata = f.read()", "with open(\"data.txt\") as f:\n    data = f.read()", "The body of a `with` block must be indented."),
    ("def count_up(n):\n    i = 0\n    while i < n:\n        print(i)", "def count_up(n):\n    i = 0\n    while i < n:\n        print(i)\n        i += 1", "`i` never changed, so the loop ran forever."),
    ("if x > 5 and < 10:\n    print(x)", "if 5 < x < 10:\n    print(x)", "Each side of `and` needs a full comparison; Python also allows chained comparisons."),
    ("def square(n):\n    n * n", "def square(n):\n    return n * n", "Without `return` the function returns None."),
    ("const total = items.reduce((a, b) => a + b);", "const total = items.reduce((a, b) => a + b, 0);", "Without an initial value, `reduce` throws on an empty array."),
    ("if (user.name = \"admin\") {\n  grantAccess();\n}", "if (user.name === \"admin\") {\n  grantAccess();\n}", "A single `=` assigns instead of comparing, so the condition was always true."),
    ("import json\ndata = json.load(\"config.json\")", "import json\nwith open(\"config.json\", encoding=\"utf-8\") as f:\n    data = json.load(f)", "`json.load` takes a file object; `json.loads` takes a string."),
]

# (code, explanation)
EXPLAIN = [
    ("squares = [x * x for x in range(5)]", "This list comprehension builds `[0, 1, 4, 9, 16]`: it squares each number from 0 to 4."),
    ("with open(\"log.txt\", \"a\") as f:\n    f.write(\"done\\n\")", "It opens `log.txt` in append mode and adds the line `done`. The `with` block closes the file even if an error happens."),
    ("names = sorted(users, key=lambda u: u.age)", "It returns a new list of the users ordered by their `age` attribute, youngest first."),
    ("try:\n    value = int(text)\nexcept ValueError:\n    value = 0", "It converts `text` to an integer and falls back to 0 when the text is not a valid number."),
    ("counts = {}\nfor word in words:\n    counts[word] = counts.get(word, 0) + 1", "It counts how often each word occurs; `get(word, 0)` supplies 0 for words not seen yet."),
    ("def memo(f):\n    cache = {}\n    def wrapper(n):\n        if n not in cache:\n            cache[n] = f(n)\n        return cache[n]\n    return wrapper", "`memo` is a decorator that caches results: each argument is computed once and later calls return the stored value."),
    ("evens = list(filter(lambda n: n % 2 == 0, numbers))", "It keeps only the even numbers of `numbers`. A comprehension, `[n for n in numbers if n % 2 == 0]`, does the same and reads more easily."),
    ("a, b = b, a", "It swaps the values of `a` and `b` in one step, using tuple packing and unpacking."),
    ("if __name__ == \"__main__\":\n    main()", "It runs `main()` only when the file is executed as a script, not when it is imported as a module."),
    ("const doubled = nums.map(n => n * 2);", "It creates a new array with every number of `nums` doubled; `nums` itself is unchanged."),
    ("SELECT name FROM users WHERE age > 30 ORDER BY name;", "It lists the names of users older than 30, sorted alphabetically."),
    ("git rebase -i HEAD~3", "It starts an interactive rebase of the last three commits, so you can reorder, edit, squash or drop them."),
    ("x = data.get(\"key\", \"missing\")", "It reads `data[\"key\"]` but returns the string `missing` instead of raising KeyError when the key is absent."),
    ("for i, item in enumerate(items, start=1):\n    print(i, item)", "It prints each item with its position, counting from 1."),
    ("total = sum(p.price * p.qty for p in cart)", "It adds up price times quantity over all products in `cart`, using a generator expression so no temporary list is built."),
]

# (question, answer)
CONCEPTS = [
    ("What is the difference between a list and a tuple in Python?", "A list is mutable: you can add, remove and change items. A tuple is immutable, so it can be a dict key and signals data that should not change."),
    ("What does the `yield` keyword do?", "`yield` turns a function into a generator: each `yield` hands one value to the caller and pauses the function until the next value is requested."),
    ("When should I use a dictionary instead of a list?", "Use a dictionary when you look values up by a key, such as a name or an id; lookups take constant time instead of scanning a list."),
    ("What is a virtual environment in Python?", "A virtual environment is a folder with its own Python interpreter and installed packages, so each project can pin its own dependency versions. Create one with `python -m venv .venv`."),
    ("What does `git stash` do?", "`git stash` saves your uncommitted changes and restores a clean working tree; `git stash pop` brings the changes back."),
    ("What is the difference between `==` and `is` in Python?", "`==` compares values, while `is` checks whether two names refer to the very same object. Use `is` only for singletons such as `None`."),
    ("What is recursion?", "Recursion is when a function calls itself on a smaller part of the problem until it reaches a base case that it can answer directly."),
    ("Why should I write unit tests?", "Unit tests check small pieces of code automatically, so you notice at once when a change breaks something, and they document how the code is meant to be used."),
    ("What is Big O notation?", "Big O describes how the running time or memory of an algorithm grows with the input size, for example O(n) for a single loop over n items."),
    ("What does `async` do in Python?", "`async def` defines a coroutine. With `await` it can pause while waiting for I/O, letting an event loop run other tasks meanwhile."),
    ("What is a race condition?", "A race condition happens when the result depends on the timing of threads or processes that share data; locks or other synchronization prevent it."),
    ("What is the difference between `let` and `const` in JavaScript?", "Both are block scoped. A `let` variable can be reassigned; a `const` binding cannot, although the object it points to can still change."),
    ("How do I install a package with pip?", "Run `pip install NAME`, ideally inside a virtual environment. Add `==VERSION` to pin a version, for example `pip install requests==2.32.3`."),
    ("What is a pure function?", "A pure function returns the same output for the same input and has no side effects, which makes it easy to test and reason about."),
    ("What does `None` mean in Python?", "`None` is Python's value for nothing or no result. Functions without a `return` statement return `None`."),
]

ASK_FUNCTION = [
    "Write a Python function that {task}.",
    "How do I write a function that {task} in Python?",
    "Can you give me a Python function that {task}?",
]
ASK_OTHER = ["Write a {lang} function that {task}.", "Show me {lang} code that {task}."]
ASK_FIX = ["Fix this code:\n```\n{code}\n```", "Why is this wrong?\n```\n{code}\n```", "This code has a bug. Can you fix it?\n```\n{code}\n```"]
ASK_EXPLAIN = ["Explain this code:\n```\n{code}\n```", "Can you explain what this code does?\n```\n{code}\n```", "What does this do?\n```\n{code}\n```"]
FOLLOW_UPS = [
    ("Thanks! Can you add a docstring?", "docstring"),
    ("How would I test it?", "test"),
]


def _fence(code: str, lang: str = "python") -> str:
    return f"```{lang}\n{code}\n```"


def _with_docstring(code: str, task: str) -> str:
    head, _, body = code.partition("\n")
    if not head.startswith("def "):
        return code
    return f'{head}\n    """Return the result of a function that {task}."""\n{body}'


def build() -> list[dict]:
    rng = random.Random(5)
    rows: list[dict] = []

    def add(messages: list[dict]) -> None:
        if rng.random() < 0.4:
            messages = [{"role": "system", "content": SYSTEM}, *messages]
        rows.append({"messages": messages})

    for task, code, note in FUNCTIONS:
        for ask in ASK_FUNCTION:
            add([{"role": "user", "content": ask.format(task=task)},
                 {"role": "assistant", "content": f"{_fence(code)}\n{note}"}])
        question, kind = FOLLOW_UPS[len(rows) % 2]
        name = code.split("(")[0].split()[-1]
        if kind == "docstring":
            second = _fence(_with_docstring(code, task))
        else:
            second = (f"Write a few pytest functions that call `{name}` with small inputs whose "
                      "answers you know, add an edge case such as an empty or zero input, "
                      "and run `pytest`.")
        add([{"role": "user", "content": ASK_FUNCTION[0].format(task=task)},
             {"role": "assistant", "content": f"{_fence(code)}\n{note}"},
             {"role": "user", "content": question},
             {"role": "assistant", "content": second}])
    for lang, task, code in OTHER_LANGUAGES:
        for ask in ASK_OTHER:
            add([{"role": "user", "content": ask.format(lang=lang, task=task)},
                 {"role": "assistant", "content": f"Here is one way:\n{_fence(code, lang.lower())}"}])
    for buggy, fixed, why in BUGS:
        for ask in ASK_FIX:
            add([{"role": "user", "content": ask.format(code=buggy)},
                 {"role": "assistant", "content": f"{why}\n{_fence(fixed, '')}"}])
        add([{"role": "user", "content": f"Why does this fail?\n```\n{buggy}\n```"},
             {"role": "assistant", "content": why},
             {"role": "user", "content": "How do I fix it?"},
             {"role": "assistant", "content": f"Like this:\n{_fence(fixed, '')}"}])
    for code, explanation in EXPLAIN:
        for ask in ASK_EXPLAIN:
            add([{"role": "user", "content": ask.format(code=code)},
                 {"role": "assistant", "content": explanation}])
    for question, answer in CONCEPTS:
        add([{"role": "user", "content": question}, {"role": "assistant", "content": answer}])
        add([{"role": "user", "content": question.lower().rstrip("?") + ", briefly?"},
             {"role": "assistant", "content": answer.split(". ")[0].rstrip(".") + "."}])
    rng.shuffle(rows)
    return rows


def main() -> None:
    rows = build()
    with OUT.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
