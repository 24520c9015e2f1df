"""JSONL / CSV / JSON-body parsers: rows, line numbers, and problems, without HTTP or a database."""

from __future__ import annotations

import io

from app.services.importers import Problem, RawRow, iter_csv, iter_json_items, iter_jsonl


def rows_and_problems(items):
    items = list(items)
    return [r for r in items if isinstance(r, RawRow)], [p for p in items if isinstance(p, Problem)]


def test_jsonl_rows_keep_their_line_numbers_and_blank_lines_are_skipped():
    data = (
        b'\xef\xbb\xbf{"text": "a", "label": "pos"}\n\n  \n'
        b'{"text": "b", "external_id": 7, "meta": {"k": 1}}\r\n{"text": "c"}'
    )
    rows, problems = rows_and_problems(iter_jsonl(io.BytesIO(data), max_line_bytes=1000))
    assert problems == []
    assert [(r.ref["row"], r.text, r.label, r.external_id, r.meta) for r in rows] == [
        (1, "a", "pos", None, None),
        (4, "b", None, 7, {"k": 1}),
        (5, "c", None, None, None),
    ]


def test_jsonl_can_be_read_twice_from_the_same_file():
    file = io.BytesIO(b'{"text": "a"}\n{"text": "b"}\n')
    first = [r.text for r in iter_jsonl(file, max_line_bytes=100)]
    second = [r.text for r in iter_jsonl(file, max_line_bytes=100)]
    assert first == second == ["a", "b"]


def test_an_overlong_jsonl_line_is_a_problem_and_the_next_line_still_parses():
    data = b'{"text": "' + b"x" * 5000 + b'"}\n{"text": "after"}\n'
    rows, problems = rows_and_problems(iter_jsonl(io.BytesIO(data), max_line_bytes=100))
    assert [(p.ref, "longer than 100 bytes" in p.problem) for p in problems] == [({"row": 1}, True)]
    assert [(r.ref["row"], r.text) for r in rows] == [(2, "after")]


def test_jsonl_rejects_non_json_constants_and_unknown_fields():
    data = b'{"text": "a", "meta": {"v": Infinity}}\n{"text": "a", "extra": 1}\n{"text": "ok"}\n'
    rows, problems = rows_and_problems(iter_jsonl(io.BytesIO(data), max_line_bytes=100))
    assert [p.ref["row"] for p in problems] == [1, 2]
    assert "Infinity" in problems[0].problem and "'extra'" in problems[1].problem
    assert [r.text for r in rows] == ["ok"]


def test_csv_rows_columns_and_line_numbers():
    data = 'label,text,external_id,lang\n pos ,"two\nlines",e1,en\n\nneg,"x, y",,fr\n'.encode()
    rows, problems = rows_and_problems(iter_csv(io.BytesIO(data), max_field_bytes=1000))
    assert problems == []
    assert [(r.ref["row"], r.text, r.label, r.external_id, r.meta) for r in rows] == [
        (2, "two\nlines", " pos ", "e1", {"lang": "en"}),  # cells are kept as written; the class check follows
        (5, "x, y", "neg", None, {"lang": "fr"}),
    ]


def test_csv_header_problems():
    for data, expected in (
        (b"", "empty"),
        (b"body\nx\n", "no 'text' column"),
        (b"text,text\nx,y\n", "repeats"),
    ):
        rows, problems = rows_and_problems(iter_csv(io.BytesIO(data), max_field_bytes=100))
        assert rows == [] and len(problems) == 1 and expected in problems[0].problem


def test_csv_field_larger_than_the_default_csv_limit_is_read():
    big = "w" * 300_000  # the csv module refuses fields over 128 KiB unless told otherwise
    rows, problems = rows_and_problems(iter_csv(io.BytesIO(f"text\n{big}\n".encode()), max_field_bytes=400_000))
    assert problems == [] and rows[0].text == big


def test_csv_that_is_not_utf8_is_one_problem():
    rows, problems = rows_and_problems(iter_csv(io.BytesIO(b"text\n\xff\xfe\xfa\n"), max_field_bytes=100))
    assert len(problems) == 1 and "UTF-8" in problems[0].problem


def test_csv_leaves_the_upload_file_open():
    file = io.BytesIO(b"text\na\n")
    list(iter_csv(file, max_field_bytes=100))
    assert not file.closed and [r.text for r in iter_csv(file, max_field_bytes=100)] == ["a"]


def test_json_items():
    items = [{"text": "a"}, "nope", {"image_base64": "aGVsbG8="}, {"image_base64": "!!"}, {"text": "b", "id": 1}]
    rows, problems = rows_and_problems(iter_json_items(items))
    assert [(r.ref["row"], r.text, r.data) for r in rows] == [(0, "a", None), (2, None, b"hello")]
    assert [p.ref["row"] for p in problems] == [1, 3, 4]
