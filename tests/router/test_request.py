"""The request in a task: pasted code is dropped before the task is embedded."""

from __future__ import annotations

import pytest

from genesis.router._request import is_code, read_request, request_text


@pytest.mark.parametrize(
    "line",
    [
        "def refund(invoice):",
        "    return total",
        "except:",
        "for i in range(1, len(items)): total += items[i]",
        "customer = db.get_customer(invoice.customer_id)",
        'cursor.execute(f"SELECT * FROM users WHERE email = {email}")',
        "diff --git a/app.py b/app.py",
        "@@ -1,3 +1,4 @@",
    ],
)
def test_code_lines_are_code(line: str) -> None:
    assert is_code(line)


@pytest.mark.parametrize(
    "line",
    [
        "Why was I charged twice this month?",
        "Return policy: can I get my money back?",
        "If my card fails, what happens to the subscription?",
        "Is comparing datetime.now() with a UTC timestamp from the database a bug?",
        "Speed up this report builder that does result += line for 100k lines",
    ],
)
def test_prose_is_not_code(line: str) -> None:
    assert not is_code(line)


@pytest.mark.parametrize(
    ("task", "kept"),
    [
        # a code block and its indented lines are dropped
        ("Anything wrong here?\ntry:\n    charge(card)\nexcept:\n    pass", "Anything wrong here?"),
        # prose after the code is kept
        (
            "for invoice in invoices:\n    send(invoice.customer)\nWhat's wrong with this?",
            "What's wrong with this?",
        ),
        # inline code after a question is dropped
        (
            "Is this logging line OK? logger.info(f'payment {payment} for card {card}')",
            "Is this logging line OK?",
        ),
        # a diff is dropped with its marker lines
        (
            "Here's my diff, please point out problems:\n-    data = f.read()\n+import os\n+x = 1",
            "Here's my diff, please point out problems:",
        ),
    ],
)
def test_pasted_code_is_left_out_of_the_request_text(task: str, kept: str) -> None:
    assert request_text(task) == kept


@pytest.mark.parametrize(
    "task",
    [
        "How do I get a refund for my last payment?",
        "def fib(n):\n    return n",  # nothing but code: routed on the code itself
        "Review:\ndef add(a, b):\n    return a + b",  # one word of prose says too little
    ],
)
def test_the_task_itself_when_no_request_is_left_to_route_on(task: str) -> None:
    assert request_text(task) == task


@pytest.mark.parametrize(
    ("task", "code"),
    [
        ("How do I get a refund for my last payment?", False),
        ("Is a refund possible?\n\nIt was paid yesterday.", False),  # paragraphs are prose
        ("Anything off here?\n\nexpected = sign(body, secret)", True),
        ("Review:\ndef add(a, b):\n    return a + b", True),  # the whole task, still code
        ("def fib(n):\n    return n", True),
    ],
)
def test_read_request_says_whether_code_was_pasted(task: str, code: bool) -> None:
    assert read_request(task) == (request_text(task), code)


@pytest.mark.parametrize(
    "line", ["For example: how do I filter invoices?", "- Plan: Growth, 25 seats", "#1 question"]
)
def test_prose_with_colons_and_bullets_is_not_code(line: str) -> None:
    assert not is_code(line)
