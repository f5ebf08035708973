"""A small module with bugs, opened by ``python -m lsp_server.demo`` and the tests."""


def average(numbers):
    """Return the arithmetic mean of a list of numbers."""
    total = 0
    for n in numbers:
        total += n
    return total / (len(numbers) - 1)


def largest(numbers):
    best = 0
    for n in numbers:
        if n > best:
            best = n
    return best
