import pytest

from kmi.datasets import get_data_home, load_adult


def test_load_adult_from_mglearn():
    bunch = load_adult()
    assert bunch.frame.shape == (30162, 15)
    assert bunch.data.shape == (30162, 14)
    assert set(bunch.target.cat.categories) == {"<=50K", ">50K"}
    assert str(bunch.data["sex"].dtype) == "category"
    assert not bunch.frame.isna().any().any()
    X, y = load_adult(dropna=False, return_X_y=True)
    assert len(X) == 32561 and X["workclass"].isna().sum() == 1836


def test_missing_file_message(tmp_path, monkeypatch):
    import kmi.datasets.adult as adult

    monkeypatch.setattr(adult, "_mglearn_copy", lambda: None)
    with pytest.raises(FileNotFoundError, match="mglearn.*was not found at .*adult.data"):
        load_adult(data_home=tmp_path, download=False)


def test_data_home(monkeypatch, tmp_path):
    monkeypatch.setenv("KMI_DATA", str(tmp_path))
    assert get_data_home() == tmp_path
    assert get_data_home("/x/y").as_posix() == "/x/y"
