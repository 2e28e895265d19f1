import os
import pickle
import shutil

import numpy as np
import pytest
import scipy.sparse as sp

from kmi.datasets import load_planetoid
from kmi.datasets._pickle import restricted_load


class _Evil:
    """Unpickling this calls os.system: a plain pickle.load would run it."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_restricted_unpickler_refuses_code():
    payload = pickle.dumps(_Evil(), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"Received: global=(posix|os|nt)\.system"):
        restricted_load(payload)


def test_restricted_unpickler_admits_arrays_and_sparse():
    obj = {"unused": None}  # dicts are built without naming a global
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    mat = sp.csr_matrix(arr)
    np.testing.assert_array_equal(restricted_load(pickle.dumps(arr)), arr)
    np.testing.assert_array_equal(restricted_load(pickle.dumps(mat)).toarray(), arr)
    assert restricted_load(pickle.dumps(obj)) == obj


def test_load_cora(shared_data):
    cora = load_planetoid("cora", data_home=shared_data, download=False)
    assert cora.features.shape == (2708, 1433)
    assert cora.features.dtype == np.float32
    A = cora.adjacency
    assert sp.issparse(A) and A.shape == (2708, 2708)
    assert A.nnz // 2 == 5278
    assert (A != A.T).nnz == 0
    assert A.diagonal().sum() == 0
    assert set(np.unique(A.data)) == {1.0}
    assert cora.n_classes == 7
    assert np.bincount(cora.labels).tolist() == [351, 217, 418, 818, 426, 298, 180]
    assert len(cora.idx_train) == 140 and len(cora.idx_val) == 500 and len(cora.idx_test) == 1000
    assert cora.idx_test.min() == 1708
    normed = load_planetoid("cora", data_home=shared_data, row_normalize=True, download=False)
    np.testing.assert_allclose(normed.features.sum(axis=1), 1.0, rtol=1e-5)


def test_load_refuses_a_malicious_file(shared_data, tmp_path):
    folder = tmp_path / "planetoid"
    shutil.copytree(shared_data / "planetoid", folder)
    os.chmod(folder, 0o755)
    target = folder / "ind.cora.graph"
    os.chmod(target, 0o644)
    target.write_bytes(pickle.dumps(_Evil(), protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="Refusing to unpickle"):
        load_planetoid("cora", data_home=tmp_path, download=False)


def test_missing_files_and_bad_name(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ind\.cora\.x.*Received: download=False"):
        load_planetoid("cora", data_home=tmp_path, download=False)
    with pytest.raises(ValueError, match="Received: name='imagenet'"):
        load_planetoid("imagenet", data_home=tmp_path)
