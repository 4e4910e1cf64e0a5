"""``alignkit data arithmetic``: a verifiable task, arithmetic problems with integer answers.

Each problem has two operands and one operation, phrased as a plain question (``What is 23 + 19?
Answer with a number.``) or as a short word problem, and is written as ``{"prompt", "reference"}``
(the ``prompt`` data format, ``reference`` the answer as a string of digits): the data the
verifiable rewards (``numeric_match``, ``exact_match``) score online algorithms on.

Problems (``operations``, all three by default):

* ``add``: ``a + b`` with ``a, b`` in ``[1, max_operand]``;
* ``sub``: ``a - b`` with ``max_operand >= a > b >= 1`` (answers are never negative);
* ``mul``: ``a × b`` with one factor in ``[2, max_factor]`` and the other in ``[2, max_operand]``.

Every ordered pair of operands an operation allows is equally likely (so with the defaults, 50 and
12, about 41% of the problems add, 41% subtract and 18% multiply; every sum is at most 100, every
difference below 50, about 60% of the products below 200). The defaults are set for a small chat
model: SmolLM2-135M-Instruct answers 0.17 of the bundled held-out problems correctly (greedy).
``word_problems`` is the share phrased as word problems.

The held-out problems are drawn first, then the training problems, with one seeded generator
(``seed``): a problem is drawn again when its *arithmetic* (operation and operands, their order
aside for ``add`` and ``mul``) is already in either set, so no problem is in both splits or twice in
one, whatever its wording, and the held-out set depends on every setting but ``train``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence

from alignkit.config.schema import check
from alignkit.datagen.spec import StepConfig
from alignkit.errors import UserError

__all__ = ["ArithmeticConfig", "Problem", "generate_problems", "render", "capacity", "run_arithmetic", "OPERATIONS"]

OPERATIONS = ("add", "sub", "mul")
SUFFIX = " Answer with a number."
NAMES = ("Mia", "Leo", "Ava", "Sam", "Zoe", "Omar", "Lena", "Ravi", "Kai", "Nora", "Ben", "Yuki")
ITEMS = ("apples", "marbles", "stickers", "books", "pencils", "cookies", "coins", "stamps", "cards", "shells")
#: plain questions: ``{a}``, ``{b}``, the operation's ``{sym}`` (+, -, ×) and ``{word}`` (plus, minus, times)
PLAIN = ("What is {a} {sym} {b}?", "Calculate {a} {sym} {b}.", "What is {a} {word} {b}?")
#: word problems per operation: ``{a}``, ``{b}``, ``{A}`` / ``{B}`` (the count with its noun), ``{name}``, ``{items}``
WORD = {
    "add": ("{name} has {A} and gets {b} more. How many {items} does {name} have now?",
            "One box holds {A} and another holds {B}. How many {items} are there in total?"),
    "sub": ("{name} had {A} and gave {b} away. How many {items} does {name} have left?",
            "A shop had {A}. It sold {b} of them. How many {items} are left?"),
    "mul": ("{name} buys {a} bags with {B} in each bag. How many {items} is that in total?",
            "There are {a} rows with {B} in each row. How many {items} are there?"),
}
SYMBOL = {"add": ("+", "plus"), "sub": ("-", "minus"), "mul": ("×", "times")}
_MAX_DRAWS_PER_PROBLEM = 200


@dataclass
class ArithmeticConfig(StepConfig):
    test_output: Optional[str] = None  #: the held-out problems (.jsonl/.parquet; null: <output stem>.test.jsonl)
    train: int = 2000  #: training problems (written to output)
    test: int = 300  #: held-out problems (written to test_output), drawn first
    seed: int = 0  #: seeds every draw: the same settings write the same files
    max_operand: int = 50  #: add/sub operands in [1, max_operand]; mul's larger factor in [2, max_operand]
    max_factor: int = 12  #: mul's smaller factor in [2, max_factor]
    operations: List[str] = field(default_factory=lambda: list(OPERATIONS))  #: any of add, sub, mul
    word_problems: float = 0.5  #: share phrased as a word problem (the rest: "What is a + b?")

    def __post_init__(self) -> None:
        check(self, train=">= 1", test=">= 1", max_operand=">= 2", max_factor=">= 2", word_problems="in [0, 1]")


@dataclass(frozen=True)
class Problem:
    op: str  #: add | sub | mul
    a: int  #: first operand, as shown
    b: int  #: second operand, as shown

    @property
    def key(self) -> tuple:
        """The problem's arithmetic: the operation and its operands (order aside for add and mul)."""
        return (self.op, self.a, self.b) if self.op == "sub" else (self.op, *sorted((self.a, self.b)))

    @property
    def answer(self) -> int:
        return {"add": self.a + self.b, "sub": self.a - self.b, "mul": self.a * self.b}[self.op]


def _count(n: int, items: str) -> str:
    """``1 apple``, ``5 apples``."""
    return f"{n} {items[:-1] if n == 1 else items}"


def render(problem: Problem, rng: random.Random, word_problems: float) -> str:
    """The problem as a plain question or a word problem (chosen with ``rng``), ending with :data:`SUFFIX`."""
    sym, word = SYMBOL[problem.op]
    a, b = problem.a, problem.b
    if rng.random() < word_problems:
        items, name = rng.choice(ITEMS), rng.choice(NAMES)
        text = rng.choice(WORD[problem.op]).format(a=a, b=b, A=_count(a, items), B=_count(b, items), name=name,
                                                   items=items)
    else:
        text = rng.choice(PLAIN).format(a=a, b=b, sym=sym, word=word)
    return text + SUFFIX


def _weights(ops: Sequence[str], k: int, f: int) -> list[int]:
    """Ordered operand pairs of each operation: each pair is equally likely."""
    return [{"add": k * k, "sub": k * (k - 1), "mul": 2 * (f - 1) * (k - 1)}[op] for op in ops]


def capacity(ops: Sequence[str], k: int, f: int) -> int:
    """Distinct problems (by :attr:`Problem.key`) the settings allow."""
    per_op = {"add": k * (k + 1) // 2, "sub": k * (k - 1) // 2, "mul": (f - 1) * (k - 1) - (f - 1) * (f - 2) // 2}
    return sum(per_op[op] for op in ops)


def _draw(rng: random.Random, ops: Sequence[str], weights: Sequence[int], k: int, f: int) -> Problem:
    op = rng.choices(ops, weights)[0]
    if op == "add":
        return Problem(op, rng.randint(1, k), rng.randint(1, k))
    if op == "sub":
        a, b = rng.sample(range(1, k + 1), 2)
        return Problem(op, max(a, b), min(a, b))
    small, large = rng.randint(2, f), rng.randint(2, k)
    return Problem(op, small, large) if rng.random() < 0.5 else Problem(op, large, small)


def generate_problems(train: int, test: int, seed: int = 0, max_operand: int = 50, max_factor: int = 12,
                      operations: Sequence[str] = OPERATIONS,
                      word_problems: float = 0.5) -> tuple[list[dict], list[dict]]:
    """``(train_rows, test_rows)`` of ``{"prompt", "reference"}`` (see the module docstring)."""
    ops = list(dict.fromkeys(str(op) for op in operations))
    unknown = [op for op in ops if op not in OPERATIONS]
    if not ops or unknown:
        raise UserError(f"arithmetic: unknown operation(s) {unknown or '(none given)'}",
                        f"set operations to a list of {', '.join(OPERATIONS)}, e.g. operations=[add,sub]")
    k, f = int(max_operand), min(int(max_factor), int(max_operand))
    room = capacity(ops, k, f)
    if train + test > room:
        raise UserError(f"arithmetic: {train} + {test} problems asked, but only {room} distinct problems have "
                        f"operands up to max_operand={k} (max_factor={f}, operations {ops})",
                        "lower train/test or raise max_operand")
    rng, weights, seen = random.Random(seed), _weights(ops, k, f), set()

    def split(n: int) -> list[dict]:
        rows = []
        for _ in range(_MAX_DRAWS_PER_PROBLEM * n):
            if len(rows) == n:
                break
            problem = _draw(rng, ops, weights, k, f)
            if problem.key in seen:
                continue
            seen.add(problem.key)
            rows.append({"prompt": render(problem, rng, word_problems), "reference": str(problem.answer)})
        if len(rows) < n:
            raise UserError(f"arithmetic: drew only {len(rows)} of {n} distinct problems with max_operand={k}",
                            "ask for fewer problems or raise max_operand")
        return rows

    held_out = split(test)
    return split(train), held_out


def run_arithmetic(cfg: Any, step: Any) -> None:
    from alignkit.data.load import resolve_path
    from alignkit.datagen.io import output_suffix, side_path

    test_path = Path(resolve_path(str(cfg.test_output))) if cfg.test_output else side_path(step.output, "test.jsonl")
    output_suffix(str(test_path), key="test_output")
    if test_path.exists() and not cfg.overwrite:
        raise UserError(f"test_output {test_path} already exists",
                        "pass overwrite=true to replace it, or choose another test_output=")
    train, test = generate_problems(int(cfg.train), int(cfg.test), int(cfg.seed), int(cfg.max_operand),
                                    int(cfg.max_factor), list(cfg.operations), float(cfg.word_problems))
    step.counts.update({"train": len(train), "test": len(test)})
    step.write(train)
    step.write(test, path=test_path, name="test")
