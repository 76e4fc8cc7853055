"""Protocol splits: train and test identities must never overlap."""
import pytest

from fastconv.face.lfw import Pair, pair_identities
from fastconv.face.protocols import Split, check_disjoint, view1, view2_all, view2_fold


def test_check_disjoint_raises_on_overlap():
    split = Split({"A": 2, "B": 1}, [Pair("A/A_0001.jpg", "C/C_0001.jpg", False)], "toy")
    with pytest.raises(ValueError, match=r"'toy'.*1 test identities.*A"):
        check_disjoint(split)
    check_disjoint(Split({"B": 1}, [Pair("A/A_0001.jpg", "C/C_0001.jpg", False)], "ok"))


def test_fold_argument_checked(tmp_path):
    with pytest.raises(ValueError, match=r"1\.\.10, got 0"):
        view2_fold(tmp_path, 0)
    with pytest.raises(TypeError):
        view2_fold(tmp_path, "3")
    with pytest.raises(ValueError, match="not found"):
        view2_fold(tmp_path, 1)


@pytest.mark.lfw
def test_view1(lfw_dir):
    split = view1(lfw_dir)
    assert split.name == "view1"
    assert len(split.train_people) == 4038 and len(split.test_pairs) == 1000
    check_disjoint(split)


@pytest.mark.lfw
def test_view2_every_fold_disjoint_and_complete(lfw_dir):
    all_pairs, fold_index = view2_all(lfw_dir)
    assert len(all_pairs) == 6000 and fold_index.tolist() == [k for k in range(10) for _ in range(600)]
    seen_test = set()
    for k in range(1, 11):
        split = view2_fold(lfw_dir, k)
        assert split.name == f"view2-fold{k}"
        assert len(split.test_pairs) == 600
        assert split.test_pairs == all_pairs[(k - 1) * 600:k * 600]
        check_disjoint(split)
        test_ids = pair_identities(split.test_pairs)
        # training people + the held-out people fold = all 5749 people
        assert 5100 < len(split.train_people) < 5250
        seen_test |= test_ids
    assert len(seen_test) > 1000
