"""dedup (exact and MinHash near duplicates, across files) and mix (weights, per-source counts)."""
import json

import pytest

from alignkit.datagen.similarity import jaccard, shingles
from alignkit.errors import UserError

from datagen_helpers import read_jsonl, write_jsonl

A = [
    {"instruction": "Write a short poem about the sea and the waves at night."},  # kept
    {"instruction": "write a short poem about the SEA, and the waves at night!"},  # exact (words) of 1
    {"instruction": "Write a short poem about the sea and the waves at dawn."},  # near: J = 8/10
    {"instruction": "List three prime numbers greater than ten."},  # kept
]
B = [
    {"prompt": "List three prime numbers greater than ten.", "chosen": "11, 13, 17", "rejected": "4"},  # exact of A4
    {"prompt": "Explain how rainbows form after a storm."},  # kept
    {"prompt": "Explain how rainbows form after the storm."},  # J = 3/7: kept
]


def test_shingles_and_jaccard_by_hand():
    a = shingles("Write a short poem about the sea and the waves at night.", 3)
    b = shingles("Write a short poem about the sea and the waves at dawn.", 3)
    # 12 words -> 10 trigrams each; they share the first 9
    assert len(a) == len(b) == 10 and jaccard(a, b) == pytest.approx(9 / 11)
    c = shingles("Explain how rainbows form after a storm.", 3)
    d = shingles("Explain how rainbows form after the storm.", 3)
    assert jaccard(c, d) == pytest.approx(3 / 7)  # 5 trigrams each, 3 shared: 3 / (5 + 5 - 3)
    assert shingles("two words", 3) == {("two", "words")} and shingles("...", 3) == set()


def test_dedup_across_files(run_step, tmp_path):
    a, b = write_jsonl(tmp_path / "a.jsonl", A), write_jsonl(tmp_path / "b.jsonl", B)
    step = run_step("dedup", f"inputs=[{a},{b}]", f"output={tmp_path / 'u.jsonl'}", "threshold=0.8")
    kept = read_jsonl(tmp_path / "u.jsonl")
    # the rows as they were; columns one file lacks are null (one table, readable by `datasets`)
    full = lambda r: {"instruction": None, "prompt": None, "chosen": None, "rejected": None, **r}  # noqa: E731
    assert kept == [full(A[0]), full(A[3]), full(B[1]), full(B[2])]
    removed = read_jsonl(tmp_path / "u.removed.jsonl")
    assert [(r["where"], r["duplicate_of"], r["match"], r["similarity"]) for r in removed] == [
        (f"{a}, line 2", f"{a}, line 1", "exact", 1.0),
        (f"{a}, line 3", f"{a}, line 1", "near", round(9 / 11, 4)),
        (f"{b}, line 1", f"{a}, line 4", "exact", 1.0),
    ]
    assert dict(step.counts) == {"inputs.0.kept": 2, "inputs.0.removed": 2, "inputs.1.kept": 2,
                                 "inputs.1.removed": 1, "exact_duplicates": 2, "near_duplicates": 1,
                                 "input": 7, "kept": 4}
    prov = json.loads((tmp_path / "u.provenance.json").read_text())
    assert [i["key"] for i in prov["inputs"]] == ["inputs.0", "inputs.1"]


def test_dedup_threshold_and_switches(run_step, tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", A)
    step = run_step("dedup", f"inputs=[{a}]", f"output={tmp_path / 'u.jsonl'}", "threshold=0.85")
    assert step.counts["near_duplicates"] == 0 and step.counts["kept"] == 3  # 9/11 < 0.85
    step = run_step("dedup", f"inputs=[{a}]", f"output={tmp_path / 'v.jsonl'}", "near=false")
    assert step.counts["kept"] == 3 and step.counts["exact_duplicates"] == 1
    step = run_step("dedup", f"inputs=[{a}]", f"output={tmp_path / 'w.jsonl'}", "exact=false", "near=false")
    assert step.counts["kept"] == 4 and not (tmp_path / "w.removed.jsonl").exists()


def test_dedup_row_without_text_names_file_and_line(run_step, tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "hi there"}, {"text": "no known field"}])
    with pytest.raises(UserError, match=r"a.jsonl, line 2: none of the fields \['instruction', 'input', 'prompt'\]"):
        run_step("dedup", f"inputs=[{a}]", f"output={tmp_path / 'u.jsonl'}")


def test_malformed_input_names_file_and_line(run_step, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "fine"}\n{"instruction": "broken"\n')
    with pytest.raises(UserError, match=r"bad.jsonl, line 2: invalid JSON"):
        run_step("dedup", f"inputs=[{bad}]", f"output={tmp_path / 'u.jsonl'}")


def test_mix_by_weight_with_per_source_counts(run_step, tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": f"a{i}", "completion": "x"} for i in range(6)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"instruction": f"b{i}", "output": "y"} for i in range(3)])
    out = tmp_path / "m.jsonl"
    step = run_step("mix", f"sources=[{{path: {a}, weight: 1}}, {{path: {b}, weight: 2}}]", "kind=sft",
                    f"output={out}")
    rows = read_jsonl(out)
    # 9 rows in all; a gets round(9 * 1/3) = 3, b round(9 * 2/3) = 6: its 3 rows twice
    assert len(rows) == 9 and sorted(rows[0]) == ["completion", "prompt", "source"]
    assert sum(r["source"] == a for r in rows) == 3 and sum(r["source"] == b for r in rows) == 6
    assert sorted(r["prompt"] for r in rows if r["source"] == b) == ["b0", "b0", "b1", "b1", "b2", "b2"]
    assert dict(step.counts) == {"sources.0.read": 6, "sources.1.read": 3, "sources.0.mixed": 3,
                                 "sources.1.mixed": 6, "rows": 9}


def test_mix_max_examples_and_raw_rows(run_step, tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": f"a{i}"} for i in range(6)])
    step = run_step("mix", f"sources=[{{path: {a}, max_examples: 2}}]", "source_field=null",
                    f"output={tmp_path / 'm.jsonl'}")
    rows = read_jsonl(tmp_path / "m.jsonl")
    assert len(rows) == 2 and all(set(r) == {"prompt"} for r in rows) and step.counts["rows"] == 2


def test_mix_without_sources_is_a_one_line_error(run_step, tmp_path):
    with pytest.raises(UserError, match="mix needs at least one source"):
        run_step("mix", f"output={tmp_path / 'm.jsonl'}")
