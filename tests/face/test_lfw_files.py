"""LFW protocol-file parsing: real files (skipped without LFW) and malformed inputs."""
import re

import pytest

from fastconv.face.lfw import (
    Pair,
    image_relpath,
    is_lfw_pairs_file,
    read_pairs,
    read_pairs_any,
    read_pairs_csv,
    read_people,
)


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_image_relpath():
    assert image_relpath("Abel_Pacheco", 1) == "Abel_Pacheco/Abel_Pacheco_0001.jpg"
    assert image_relpath("George_W_Bush", 530) == "George_W_Bush/George_W_Bush_0530.jpg"
    with pytest.raises(ValueError, match=">= 1"):
        image_relpath("X", 0)
    with pytest.raises(TypeError, match="int"):
        image_relpath("X", "1")
    with pytest.raises(ValueError):
        image_relpath("", 1)


def test_small_pairs_file_folds(tmp_path):
    text = "2\t1\nA\t1\t2\nA\t1\tB\t3\nC\t2\t4\nD\t1\tE\t1\n"
    folds = read_pairs(_write(tmp_path, "p.txt", text))
    assert folds == [
        [Pair("A/A_0001.jpg", "A/A_0002.jpg", True), Pair("A/A_0001.jpg", "B/B_0003.jpg", False)],
        [Pair("C/C_0002.jpg", "C/C_0004.jpg", True), Pair("D/D_0001.jpg", "E/E_0001.jpg", False)],
    ]
    dev = read_pairs(_write(tmp_path, "dev.txt", "1\nA 1 2\nA 1 B 3\n"))
    assert len(dev) == 1 and [p.same for p in dev[0]] == [True, False]


@pytest.mark.parametrize(
    "text, line, pattern",
    [
        ("1\nA 1\nA 1 B 2\n", 2, "expected 3 fields"),  # wrong field count (matched)
        ("1\nA 1 2\nA 1 B\n", 3, "expected 4 fields"),  # wrong field count (mismatched)
        ("1\nA 1 x\nA 1 B 2\n", 2, "integer"),  # non-integer number
        ("1\nA 1 2\nA 0 B 2\n", 3, ">= 1"),  # image numbers are 1-based
        ("2\nA 1 2\nA 1 B 2\n", 3, "header promises"),  # header says more than there is
        ("1\nA 1 2\nA 1 B 2\nC 1 2\n", 4, "extra line"),  # more lines than the header says
        ("x y\nA 1 2\n", 1, "integer"),  # bad header
        ("1 2 3\n", 1, "header"),  # header with 3 fields
    ],
)
def test_malformed_pairs_name_file_and_line(tmp_path, text, line, pattern):
    _assert_names_file_and_line(read_pairs, _write(tmp_path, "bad_pairs.txt", text), line, pattern)


def _assert_names_file_and_line(reader, path, line, pattern):
    with pytest.raises(ValueError) as info:
        reader(path)
    msg = str(info.value)
    assert f"{path.name}:{line}:" in msg, msg
    assert re.search(pattern, msg), msg


def test_people_formats(tmp_path):
    multi = read_people(_write(tmp_path, "people.txt", "2\n2\nA 3\nB 1\n1\nC 2\n"))
    assert multi == [{"A": 3, "B": 1}, {"C": 2}]
    single = read_people(_write(tmp_path, "dev.txt", "2\nA 3\nB 1\n"))
    assert single == [{"A": 3, "B": 1}]


@pytest.mark.parametrize(
    "text, line, pattern",
    [
        ("2\nA 3\nB\n", 3, "expected 2 fields"),  # one-fold file, wrong field count
        ("1\nA\n", 2, "expected 2 fields"),  # a lone name is not a fold size
        ("2\nA 3\nB x\n", 3, "integer"),
        ("3\nA 3\nB 1\n", 3, "promises 3 people"),
        ("2\n1\nA 3\n2\nB 1 extra\nC 1\n", 5, "expected 2 fields"),
        ("2\n1\nA 3\nB 1\n", 4, "expected the size of fold 2"),
        ("3\n1\nA 3\n1\nB 1\n", 5, "promises 3 folds"),
        ("1\n2\nA 3\nA 1\n", 4, "listed twice"),
    ],
)
def test_malformed_people_name_file_and_line(tmp_path, text, line, pattern):
    _assert_names_file_and_line(read_people, _write(tmp_path, "bad_people.txt", text), line, pattern)


def test_pairs_csv(tmp_path):
    path = _write(tmp_path, "p.csv", "path_a,path_b,label\na.jpg, b.jpg ,1\nc.jpg,d.jpg,false\n\ne.jpg,f.jpg,TRUE\n")
    assert read_pairs_csv(path) == [
        Pair("a.jpg", "b.jpg", True), Pair("c.jpg", "d.jpg", False), Pair("e.jpg", "f.jpg", True)
    ]
    assert not is_lfw_pairs_file(path)
    pairs, folds = read_pairs_any(path)
    assert len(pairs) == 3 and folds is None
    with pytest.raises(ValueError, match=r"p2.csv:2: expected 3"):
        read_pairs_csv(_write(tmp_path, "p2.csv", "a,b,1\na,b\n"))
    with pytest.raises(ValueError, match=r"p3.csv:2: label"):
        read_pairs_csv(_write(tmp_path, "p3.csv", "a,b,1\na,b,maybe\n"))


def test_read_pairs_any_detects_lfw(tmp_path):
    path = _write(tmp_path, "p.txt", "2 1\nA 1 2\nA 1 B 3\nC 2 4\nD 1 E 1\n")
    assert is_lfw_pairs_file(path)
    pairs, folds = read_pairs_any(path)
    assert len(pairs) == 4 and folds.tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="does not exist"):
        read_pairs_any(tmp_path / "nope.txt")


@pytest.mark.lfw
def test_real_pairs_and_people(lfw_dir):
    folds = read_pairs(lfw_dir / "pairs.txt")
    assert len(folds) == 10 and all(len(f) == 600 for f in folds)
    for f in folds:
        assert [p.same for p in f] == [True] * 300 + [False] * 300
    assert folds[0][0] == Pair("Abel_Pacheco/Abel_Pacheco_0001.jpg", "Abel_Pacheco/Abel_Pacheco_0004.jpg", True)
    # every referenced image exists
    root = lfw_dir / "lfw-deepfunneled"
    missing = [r for f in folds for p in f for r in (p.a, p.b) if not (root / r).is_file()]
    assert missing == []

    people = read_people(lfw_dir / "people.txt")
    assert [len(f) for f in people] == [601, 555, 552, 560, 567, 527, 597, 601, 580, 609]
    assert sum(len(f) for f in people) == 5749
    assert sum(sum(f.values()) for f in people) == 13233
    names = [n for f in people for n in f]
    assert len(set(names)) == len(names)

    (dev_train,) = read_pairs(lfw_dir / "pairsDevTrain.txt")
    (dev_test,) = read_pairs(lfw_dir / "pairsDevTest.txt")
    assert (len(dev_train), len(dev_test)) == (2200, 1000)
    (ptrain,) = read_people(lfw_dir / "peopleDevTrain.txt")
    (ptest,) = read_people(lfw_dir / "peopleDevTest.txt")
    assert (len(ptrain), len(ptest)) == (4038, 1711)
    assert not set(ptrain) & set(ptest)
