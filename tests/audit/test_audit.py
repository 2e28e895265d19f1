"""kmi.audit.audit on image, graph and text models; the command line on a user's model."""

import json

import keras
import numpy as np
import pytest

from kmi.audit import Report, audit
from kmi.audit.cli import main
from kmi.datasets import load_digits
from kmi.models import CausalLM, byte_tokenizer, gcn, softmax_regression
from kmi.targets import Target

TINY = {
    "MIFace": {"max_iter": 60, "learning_rate": 0.5, "optimizer": "sgd", "tv_weight": 0.0},
    "InversionModel": {"epochs": 30},
    "GMI": {"gan_steps": 20, "latent_dim": 8, "gan_width": 8, "max_iter": 10, "n_restarts": 1},
    "BREPMI": {
        "max_iter": 3,
        "n_directions": 4,
        "init_batches": 2,
        "init_batch_size": 16,
        # its own prior where GMI does not run (label-only): not the default 1,000 steps
        **{"gan_steps": 20, "latent_dim": 8, "gan_width": 8},
    },
}


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    private, public = np.arange(0, 600), np.arange(600, 1000)
    keras.utils.set_random_seed(0)
    model = softmax_regression((8, 8, 1), 10)
    model.compile(keras.optimizers.Adam(3e-2), "sparse_categorical_crossentropy")
    # batches of 60: 10 whole ones (on JAX a partial last batch compiles the step again)
    model.fit(X[private], y[private], epochs=20, batch_size=60, verbose=0)
    return model, X[private], y[private], X[public]


@pytest.fixture(scope="module")
def image_report(digits):
    model, X, y, X_pub = digits
    return audit(
        model,
        modality="image",
        private_data=(X, y),
        public_data=X_pub,
        attack_params=TINY,
        verbose=0,
    )


def test_image_audit_runs_and_measures_the_applicable_attacks(image_report):
    report = image_report
    names = [r["attack"] for r in report.rows]
    # DeepInversion is skipped (no BatchNormalization), and says why
    assert names == ["PublicMeanBaseline", "MIFace", "InversionModel", "GMI", "BREPMI"]
    assert (
        "DeepInversion: the model has no BatchNormalization"
        in report.settings["model: skipped attacks"]
    )
    base = report.rows[0]
    assert base["queries"] == 0 and base["access"] == "none"
    # one class in ten is the mean image's lot; MIFace on a softmax target does better
    assert base["top_1"] == pytest.approx(0.1)
    mi = report.rows[1]
    assert mi["top_1"] >= 0.5 and mi["classes"] == 10
    inv = report.rows[2]
    assert inv["instance_top_1"] > 0.3 and inv["queries"] >= 400
    assert report.settings["evaluation classifier held-out accuracy"] > 0.5
    # figures: the real examples, then one grid per attack; no images in the rows
    titles = [f["title"] for f in report.figures]
    assert titles[0].startswith("Real private") and "model: MIFace" in titles
    assert all(not k.startswith("_") for r in report.rows for k in r)
    assert "recognises as the right class" in report.summary[0]
    # every row has its distance to the nearest private image; one verdict per model
    assert all("nearest_mse" in r for r in report.rows)
    (verdict,) = report.verdicts
    assert verdict["target"] == "model" and verdict["risk"] in ("high", "medium", "low")


def test_image_audit_label_only_runs_only_what_it_allows(digits):
    model, X, y, X_pub = digits
    target = Target(model, access="label-only")
    report = audit(
        target,
        modality="image",
        private_data=(X[:200], y[:200]),
        public_data=X_pub[:100],
        attack_params=TINY,
        eval_model=_eval(X, y),
        verbose=0,
    )
    assert [r["attack"] for r in report.rows] == ["PublicMeanBaseline", "BREPMI"]
    assert "MIFace: needs white-box access" in report.settings["model: skipped attacks"]


def _eval(X, y):
    from kmi.audit import train_evaluation_model

    return train_evaluation_model(X, y, 10, epochs=2)[0]


def test_image_audit_bad_input(digits):
    model, X, y, X_pub = digits
    with pytest.raises(ValueError, match=r"images of shape \(8, 8, 1\), the target's input"):
        audit(model, modality="image", private_data=(X[:, :4], y), verbose=0)
    with pytest.raises(ValueError, match="one label per image"):
        audit(model, modality="image", private_data=(X, y[:5]), verbose=0)
    with pytest.raises(ValueError, match="pixel_range must hold two finite numbers"):
        audit(model, modality="image", private_data=(X, y), pixel_range=(1, 0), verbose=0)
    bad = X.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        audit(model, modality="image", private_data=(bad, y), verbose=0)
    with pytest.raises(ValueError, match="modality must be one of"):
        audit(model, modality="audio", private_data=(X, y))
    with pytest.raises(ValueError, match=r"pair \(images, labels\)"):
        audit(model, modality="image", private_data=X, verbose=0)
    with pytest.raises(ValueError, match="at least 2 distinct classes"):  # chance would be 100%
        audit(model, modality="image", private_data=(X[:1], y[:1]), verbose=0)
    with pytest.raises(ValueError, match="private_data is empty"):
        audit(model, modality="image", private_data=(X[:0], y[:0]), verbose=0)
    with pytest.raises(ValueError, match="nodes applies to a graph audit"):
        audit(model, modality="image", private_data=(X, y), nodes=[0, 1], verbose=0)


def test_image_audit_journal_resumes(digits, tmp_path, monkeypatch):
    from kmi.attacks import InversionModel, MIFace

    model, X, y, X_pub = digits
    journal = tmp_path / "audit.jsonl"
    attacks = [
        ("PublicMeanBaseline", None, {}),
        ("MIFace", MIFace, TINY["MIFace"]),
        ("InversionModel", InversionModel, TINY["InversionModel"]),
    ]
    ev = _eval(X, y)

    def interrupt(self, X, y=None):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(InversionModel, "fit", interrupt)
        with pytest.raises(KeyboardInterrupt):
            audit(
                model,
                modality="image",
                private_data=(X, y),
                public_data=X_pub,
                attacks=attacks,
                eval_model=ev,
                verbose=0,
                checkpoint=journal,
            )
    done = [json.loads(line)["attack"] for line in journal.read_text().splitlines()]
    assert done == ["PublicMeanBaseline", "MIFace"]

    def refit(self, X=None, y=None):
        raise AssertionError("a finished attack was run again")

    monkeypatch.setattr(MIFace, "fit", refit)
    report = audit(
        model,
        modality="image",
        private_data=(X, y),
        public_data=X_pub,
        attacks=attacks,
        eval_model=ev,
        verbose=0,
        checkpoint=journal,
    )
    assert [r["attack"] for r in report.rows] == [a[0] for a in attacks]
    # the resumed MIFace still has its reconstruction grid
    assert "model: MIFace" in [f["title"] for f in report.figures]


def test_graph_audit():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    A = np.triu((rng.random((40, 40)) < np.where(y[:, None] == y, 0.25, 0.01)), 1)
    A = (A + A.T).astype("float32")
    X = (
        rng.random((40, 16))
        < np.where(y[:, None] == 1, [0.6] * 8 + [0.1] * 8, [0.1] * 8 + [0.6] * 8)
    ).astype("float32")
    model = gcn(X.shape[1], 2, dropout=0.0)
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    model.fit([X, A], y, batch_size=40, epochs=40, shuffle=False, verbose=0)
    report = audit(
        model,
        modality="graph",
        private_data=(X, A, y),
        nodes=np.arange(40),
        attack_params={"GraphMI": {"max_iter": 30, "smoothness_after": 10}},
        verbose=0,
    )
    by = {r["attack"]: r for r in report.rows}
    assert list(by) == ["FeatureSimilarity", "GraphMI", "LinkStealing", "LinkTeller"]
    assert by["FeatureSimilarity"]["queries"] == 0 and by["LinkTeller"]["queries"] > 0
    assert max(r["auc_all"] for r in report.rows) > 0.7
    assert "AUC" in report.summary[0]
    with pytest.raises(ValueError, match="adjacency must be"):
        audit(model, modality="graph", private_data=(X, A[:5], y), verbose=0)
    black = audit(
        Target(model, access="black-box"),
        modality="graph",
        private_data=(X, A, y),
        nodes=np.arange(40),
        verbose=0,
    )
    assert "GraphMI" not in {r["attack"] for r in black.rows}


CANARY, PREFIX = "the code is 4817", "the code is "


@pytest.fixture(scope="module")
def canary_lm():
    """A byte-level LM that has seen the canary 20 times among two other texts."""
    keras.utils.set_random_seed(0)
    tok = byte_tokenizer(21)
    texts = [CANARY] * 20 + ["the cat sat on a mat"] * 20 + ["a dog ran far away"] * 20
    model = CausalLM(256, 20, embedding_dim=32, intermediate_dim=64)
    x, y, w = CausalLM.lm_targets(np.asarray(tok(texts)))
    model.compile(
        keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(x, y, sample_weight=w, epochs=30, batch_size=20, verbose=0)
    return model, tok


_DRAWS = np.random.default_rng(0).choice(10_000, size=40, replace=False)
REFERENCES = [PREFIX + f"{d:04d}" for d in _DRAWS if PREFIX + f"{d:04d}" != CANARY][:31]


def test_text_audit_extracts_the_canary(canary_lm):
    model, tok = canary_lm
    report = audit(
        model,
        modality="text",
        private_data=[CANARY],
        prompts=[PREFIX],
        tokenizer=tok,
        references=REFERENCES,
        verbose=0,
        attack_params={
            "LMExtraction": {
                "n_samples": 8,
                "top_k": 3,
                "max_new_tokens": 4,
                "ranking": "perplexity",
            },
            "TokenOptimization": {"allowed_tokens": "0123456789", "n_restarts": 2, "max_iter": 40},
        },
    )
    by = {r["attack"]: r for r in report.rows}
    assert by["LMExtraction"]["exact_top_1"] == 1.0
    assert by["TokenOptimization"]["exact_top_1"] == 1.0
    # the exposure against 31 other fills of the template: the canary ranks first
    assert by["Exposure"]["exposure"] == pytest.approx(5.0)  # log2(32): rank 1 of 32
    assert by["Exposure"]["max_exposure"] == pytest.approx(5.0)
    assert any("exposure is 5.0 bits" in line for line in report.summary)
    (verdict,) = report.verdicts  # one secret recovered: above 0, not surely by 25 %
    assert verdict["risk"] == "medium" and "recovers 1 of 1 secrets" in verdict["why"]
    with pytest.raises(ValueError, match="references that start with its prompt"):
        audit(
            model,
            modality="text",
            private_data=[CANARY],
            prompts=[PREFIX],
            tokenizer=tok,
            references=["unrelated text"],
            attacks=[],
            verbose=0,
        )
    with pytest.raises(ValueError, match="start with one of the prompts"):
        audit(
            model,
            modality="text",
            private_data=["other"],
            prompts=[PREFIX],
            tokenizer=tok,
            verbose=0,
        )


def test_report_plot_renders_as_svg(tmp_path):
    report = Report(title="t")
    report.add_plot(
        "trade-off",
        [
            {"x": 0.9, "y": 0.8, "label": "none", "series": "GMI"},
            {"x": 0.7, "y": 0.1, "label": "DP", "series": "GMI"},
        ],
        x_label="accuracy",
        y_label="attack top-1",
    )
    with pytest.raises(ValueError, match="finite"):
        report.add_plot(
            "bad", [{"x": float("nan"), "y": 0, "label": ""}], x_label="a", y_label="b"
        )
    text = report.to_html(tmp_path / "r.html")
    assert text.count("<svg") == 1 and "<polyline" in text and text.count("<circle") == 2
    # unrelated models are drawn as points, not joined
    report.plots[0]["lines"] = False
    assert "<polyline" not in report.to_html() and report.to_html().count("<circle") == 2
    assert "http" not in text
    assert json.loads(report.to_json())["plots"][0]["points"][1]["label"] == "DP"


# ------------------------------------------------------------------------ command line
def _save(tmp_path, digits, **arrays):
    model, X, y, X_pub = digits
    path = tmp_path / "model.keras"
    model.save(path)
    data = tmp_path / "data.npz"
    np.savez(data, **arrays)
    return str(path), str(data)


def test_cli_user_image_model(tmp_path, digits, capsys, monkeypatch):
    import kmi.audit.image as image

    monkeypatch.setattr(image, "IMAGE_ATTACKS", image.IMAGE_ATTACKS[:2])
    model, X, y, X_pub = digits
    path, data = _save(tmp_path, digits, x_private=X[:300], y_private=y[:300])
    out = tmp_path / "rep"
    assert (
        main(
            [
                "audit",
                "--model",
                path,
                "--data",
                data,
                "--modality",
                "image",
                "--output",
                str(out),
                "--pixel-range",
                "0",
                "1",
                "-q",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "PublicMeanBaseline" in text and "MIFace" in text and "Summary:" in text
    report = json.loads((tmp_path / "rep.json").read_text())
    assert report["settings"]["pixel range of the data"] == "[0, 1]"
    assert [r["attack"] for r in report["rows"]] == ["PublicMeanBaseline", "MIFace"]
    assert not (tmp_path / "rep.partial.jsonl").exists()


def test_cli_user_model_errors(tmp_path, digits, capsys):
    model, X, y, X_pub = digits
    out = ["--output", str(tmp_path / "rep"), "-q"]
    # data that does not match the model's input
    path, data = _save(
        tmp_path, digits, x_private=np.zeros((5, 28, 28, 1)), y_private=np.zeros(5, int)
    )
    assert main(["audit", "--model", path, "--data", data, "--modality", "image", *out]) == 2
    err = capsys.readouterr().err
    assert "does not fit the model" in err and "(8, 8, 1)" in err and "28, 28, 1)" in err
    # missing arrays
    path, data = _save(tmp_path, digits, images=X[:5])
    assert main(["audit", "--model", path, "--data", data, "--modality", "image", *out]) == 2
    assert "Missing: x_private, y_private" in capsys.readouterr().err
    # --model without --data
    assert main(["audit", "--model", path, *out]) == 2
    assert "--model with --data and --modality" in capsys.readouterr().err


def test_cli_refuses_an_unsafe_model(tmp_path, digits, capsys):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
    path = tmp_path / "unsafe.keras"
    model.save(path)
    X = digits[1]
    np.savez(tmp_path / "d.npz", x_private=X[:20], y_private=digits[2][:20])
    args = [
        "audit",
        "--model",
        str(path),
        "--data",
        str(tmp_path / "d.npz"),
        "--modality",
        "image",
        "--output",
        str(tmp_path / "rep"),
        "-q",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Refused to load" in err and "--unsafe-deserialization" in err
    assert not (tmp_path / "rep.html").exists()


@pytest.mark.slow  # 70-145 s; test_mnist_audit_trains_each_model_once covers its kmi lines
def test_cli_mnist_demo_quick_resumes_after_interruption(tmp_path, capsys, monkeypatch):
    from kmi.attacks import GMI

    args = ["audit", "--demo", "--quick", "--output", str(tmp_path / "rep"), "-q"]

    def interrupt(self, X=None, y=None):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(GMI, "fit", interrupt)  # as the GAN prior starts training
        assert main(args) == 130
    assert "--resume" in capsys.readouterr().err
    journal = tmp_path / "rep.partial.jsonl"
    done = [json.loads(line)["attack"] for line in journal.read_text().splitlines()]
    assert done == ["PublicMeanBaseline", "MIFace", "InversionModel"]
    for trained in ("no_defense", "MID_0.01", "evaluation_classifier"):  # not trained again
        assert (tmp_path / "rep.partial" / f"{trained}.keras").exists()
    assert not (tmp_path / "rep.html").exists()

    first = json.loads(journal.read_text().splitlines()[1])
    assert main([*args, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "Verdict:\n- no defense: " in out and "| Model | Defense |" in out
    assert "kmi-report" not in out
    report = json.loads((tmp_path / "rep.json").read_text())
    targets = list(dict.fromkeys(r["target"] for r in report["rows"]))
    assert targets[0] == "no defense" and targets[1].startswith("DP-SGD (epsilon")
    assert targets[2].startswith("MID (beta")
    assert len(report["rows"]) == 12 and len(report["plots"]) == 1
    # the journaled MIFace result is the one reported: it was not run again
    again = next(
        r for r in report["rows"] if r["target"] == "no defense" and r["attack"] == "MIFace"
    )
    assert again["invert_s"] == first["invert_s"] and again["top_1"] == first["top_1"]
    # a verdict per model, with its defense, strength and test accuracy; one curve
    # per defense (each of one strength here: --sweep trains three)
    verdicts = report["verdicts"]
    assert [v["defense"] for v in verdicts] == ["no defense", "DP-SGD", "MID"]
    assert verdicts[2]["strength"] == "beta 0.01" and 0 <= verdicts[2]["utility"] <= 1
    (plot,) = report["plots"]
    assert plot["lines"] and [p["series"] for p in plot["points"]] == [
        "no defense",
        "DP-SGD",
        "MID",
    ]
    html = (tmp_path / "rep.html").read_text()
    assert html.index("<th>Strength</th>") < html.index('id="summary"')
    # real examples, then one grid of 10 classes per (model, attack)
    assert html.count("<svg") == 1 and html.count("data:image/png") == 10 + 12 * 10
    assert not journal.exists() and not (tmp_path / "rep.partial").exists()


def test_mnist_audit_trains_each_model_once(tmp_path, monkeypatch, capsys):
    # The demo's own part, without its attacks (the audit is faked here; the image
    # audit's tests run the attacks, the journal and the report): the evaluation
    # classifier and one target per defense are trained, saved, handed to the audit
    # with the demo's attacks and settings, and loaded, not trained, a second time.
    import kmi.audit.api as api
    import kmi.audit.demo as demo

    calls = []

    def fake_audit(models, **kwargs):
        calls.append((models, kwargs))
        return kwargs["report"]

    monkeypatch.setattr(api, "audit", fake_audit)
    split = demo.mnist_demo_split

    def whole_batches(**kwargs):
        # 640 private images (576 train the evaluation classifier), 64 test, 64 public:
        # whole batches of 64, as on JAX a partial last one compiles each step again
        X, y, private, test, public = split(**{**kwargs, "quick": False})
        order = np.concatenate([private, test, public])
        return X, y, order[:640], order[640:704], order[704:768]

    monkeypatch.setattr(demo, "mnist_demo_split", whole_batches)
    models_dir = tmp_path / "models"
    report = demo.mnist_audit(quick=True, model_dir=models_dir, verbose=1)
    assert "Training the target with DP-SGD (epsilon 3)..." in capsys.readouterr().out
    (models, kwargs) = calls[0]
    assert [m.defense for m in models] == ["no defense", "DP-SGD", "MID"]
    assert models[1].strength.startswith("epsilon ") and models[2].strength == "beta 0.01"
    assert all(0.0 <= m.utility <= 1.0 for m in models)
    assert [name for name, *_ in kwargs["attacks"]] == [
        "PublicMeanBaseline",
        "MIFace",
        "InversionModel",
        "GMI",
    ]
    assert kwargs["attack_params"]["GMI"]["gan_steps"] == 10
    X_private, y_private = kwargs["private_data"]
    assert X_private.shape == (640, 32, 32, 1) and kwargs["public_data"].shape[0] == 64
    dp_label = models[1].label  # "DP-SGD (epsilon <as reached>)"
    assert 0 < report.settings[f"{dp_label}: epsilon"] <= 3.0 + 1e-6
    assert 0.0 <= report.settings["evaluation classifier held-out accuracy"] <= 1.0
    stems = ("evaluation_classifier", "no_defense", "DP-SGD_3", "MID_0.01")
    for stem in stems:
        assert (models_dir / f"{stem}.keras").exists()
        assert (models_dir / f"{stem}.json").exists()

    def not_again(*args, **kwargs):
        raise AssertionError("a saved model was trained again")

    monkeypatch.setattr(demo, "_train_mnist_target", not_again)
    monkeypatch.setattr("kmi.audit.image.train_evaluation_model", not_again)
    again = demo.mnist_audit(quick=True, model_dir=models_dir, verbose=0)
    # the same models: the reloaded ones score the test images as the trained ones did
    assert [m.label for m in calls[1][0]] == [m.label for m in models]
    assert [m.utility for m in calls[1][0]] == [m.utility for m in models]
    del again.settings["wall time (s)"], report.settings["wall time (s)"]
    assert again.settings == report.settings
    with pytest.raises(ValueError, match="defenses must be among"):
        demo.mnist_audit(quick=True, defenses=("no defense", "label smoothing"))


def test_cli_sweep_trains_each_strength(tmp_path, capsys, monkeypatch):
    import kmi.audit.demo as demo

    seen = {}
    verdict = {
        "target": "DP-SGD (epsilon 1)",
        "defense": "DP-SGD",
        "strength": "epsilon 1",
        "utility": 0.9,
        "attack": "MIFace",
        "success": 0.3,
        "baseline": 0.1,
        "advantage": 0.2,
        "interval": (0.1, 0.3),
        "risk": "medium",
        "why": "MIFace beats the baseline",
    }

    def fake(**kwargs):
        seen.update(kwargs)
        return Report(title="t", verdicts=[verdict])

    monkeypatch.setattr(demo, "mnist_audit", fake)
    out = str(tmp_path / "rep")
    assert main(["audit", "--demo", "--sweep", "--output", out, "-q"]) == 0
    assert seen["dp_epsilon"] == (1.0, 3.0, 8.0) and seen["mid_beta"] == (0.01, 0.1, 1.0)
    printed = capsys.readouterr().out
    assert "- DP-SGD (epsilon 1): medium risk. MIFace beats the baseline." in printed
    assert "| Model | Defense | Strength |" in printed  # the sweep's table
    assert main(["audit", "--demo", "adult", "--sweep", "--output", out, "-q"]) == 2
    assert "--sweep applies to the mnist demo" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"mid_beta must be a positive number"):
        demo._strengths((0.1, -1), "mid_beta")


def test_image_audit_of_a_defense_at_two_strengths(digits):
    """Several models into one report: one evaluation classifier, a curve per defense."""
    from kmi.audit import IMAGE_ATTACKS, AuditedModel

    model, X, y, X_pub = digits
    noisy = {}
    for scale in (0.05, 0.5):  # a stand-in defense: noise on the trained weights
        clone = keras.models.clone_model(model)
        rng = np.random.default_rng(0)
        clone.set_weights([w + scale * rng.normal(size=w.shape) for w in model.get_weights()])
        noisy[scale] = clone
    utility = {s: float(np.mean(m.predict(X, verbose=0).argmax(1) == y)) for s, m in noisy.items()}
    calls = []
    import kmi.audit.image as image

    train = image.train_evaluation_model
    with pytest.MonkeyPatch.context() as m:
        m.setattr(
            image, "train_evaluation_model", lambda *a, **k: calls.append(1) or train(*a, **k)
        )
        report = audit(
            [
                AuditedModel(model, utility=1.0),
                *(
                    AuditedModel(
                        noisy[s], defense="noise", strength=f"scale {s}", utility=utility[s]
                    )
                    for s in (0.05, 0.5)
                ),
            ],
            modality="image",
            private_data=(X, y),
            public_data=X_pub,
            attacks=[s for s in IMAGE_ATTACKS if s[0] in ("PublicMeanBaseline", "MIFace")],
            attack_params=TINY,
            verbose=0,
        )
    assert len(calls) == 1  # one evaluation classifier judges all three
    targets = list(dict.fromkeys(r["target"] for r in report.rows))
    assert targets == ["no defense", "noise (scale 0.05)", "noise (scale 0.5)"]
    assert [v["strength"] for v in report.verdicts] == [None, "scale 0.05", "scale 0.5"]
    (plot,) = report.plots
    noise = [p for p in plot["points"] if p["series"] == "noise"]
    assert [p["label"] for p in noise] == ["scale 0.05", "scale 0.5"]
    assert [p["x"] for p in noise] == [utility[0.05], utility[0.5]]
    # the height is the best counted attack's top-1 (the baseline's if MIFace's
    # images are adversarial patterns)
    for point, target in zip(noise, targets[1:]):
        base, mi = (r for r in report.rows if r["target"] == target)
        assert point["y"] == (base["top_1"] if mi["adversarial"] else mi["top_1"])
    assert report.summary[0].startswith("noise: scale 0.05: ")


def test_cli_user_tabular_and_graph_models(tmp_path, capsys):
    rng = np.random.default_rng(0)
    # tabular: column 0 is a binary sensitive attribute the label depends on
    X = rng.normal(size=(300, 4)).astype("float32")
    X[:, 0] = rng.integers(0, 2, 300)
    y = ((X[:, 0] + X[:, 1]) > 0.5).astype(int)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(X, y, epochs=5, verbose=0)
    model.save(tmp_path / "tab.keras")
    np.savez(
        tmp_path / "tab.npz",
        x_private=X[:150],
        y_private=y[:150],
        x_public=X[150:],
        y_public=y[150:],
    )
    args = [
        "audit",
        "--model",
        str(tmp_path / "tab.keras"),
        "--data",
        str(tmp_path / "tab.npz"),
        "--modality",
        "tabular",
        "--output",
        str(tmp_path / "tab"),
        "-q",
    ]
    assert main(args) == 2
    assert "--sensitive-feature" in capsys.readouterr().err
    assert main([*args, "--sensitive-feature", "0"]) == 0
    rows = json.loads((tmp_path / "tab.json").read_text())["rows"]
    assert rows[0]["attack"] == "ImputationBaseline" and len(rows) >= 4

    # graph: a GCN on [features, adjacency]
    y = np.repeat([0, 1], 10)
    A = np.triu(rng.random((20, 20)) < np.where(y[:, None] == y, 0.4, 0.02), 1)
    A = (A + A.T).astype("float32")
    F = (rng.random((20, 6)) < 0.5).astype("float32")
    gnn = gcn(6, 2, dropout=0.0)
    gnn.compile("adam", "sparse_categorical_crossentropy")
    gnn.fit([F, A], y, batch_size=20, epochs=5, shuffle=False, verbose=0)
    gnn.save(tmp_path / "g.keras")
    np.savez(tmp_path / "g.npz", features=F, adjacency=A, labels=y)
    assert (
        main(
            [
                "audit",
                "--model",
                str(tmp_path / "g.keras"),
                "--data",
                str(tmp_path / "g.npz"),
                "--modality",
                "graph",
                "--access",
                "black-box",
                "--output",
                str(tmp_path / "g"),
                "-q",
            ]
        )
        == 0
    )
    rows = json.loads((tmp_path / "g.json").read_text())["rows"]
    assert [r["attack"] for r in rows] == ["FeatureSimilarity", "LinkStealing", "LinkTeller"]
    # features that do not match the model
    np.savez(tmp_path / "bad.npz", features=F[:, :3], adjacency=A, labels=y)
    assert (
        main(
            [
                "audit",
                "--model",
                str(tmp_path / "g.keras"),
                "--data",
                str(tmp_path / "bad.npz"),
                "--modality",
                "graph",
                "--output",
                str(tmp_path / "g"),
                "-q",
            ]
        )
        == 2
    )
    assert "takes 6 features per node" in capsys.readouterr().err


def test_cli_user_text_model(tmp_path, canary_lm):
    model, _ = canary_lm
    model.save(tmp_path / "lm.keras")
    np.savez(
        tmp_path / "t.npz",
        secrets=np.array([CANARY]),
        prompts=np.array([PREFIX]),
        references=np.array(REFERENCES),  # optional: the canary's exposure among them
    )
    assert (
        main(
            [
                "audit",
                "--model",
                str(tmp_path / "lm.keras"),
                "--data",
                str(tmp_path / "t.npz"),
                "--modality",
                "text",
                "--output",
                str(tmp_path / "t"),
                "-q",
            ]
        )
        == 0
    )
    rows = {r["attack"]: r for r in json.loads((tmp_path / "t.json").read_text())["rows"]}
    assert rows["LMExtraction"]["exact_top_1"] == 1.0
    # the white-box attack runs too (every byte allowed, so it is harder)
    assert rows["TokenOptimization"]["character_accuracy"] > 0.25
    assert rows["Exposure"]["exposure"] == pytest.approx(5.0)  # first of 32


def test_image_audit_stops_where_the_model_is_at_chance_on_its_private_data(digits):
    model, X, y, X_pub = digits
    # labels the model does not give these images (as with data of another pixel
    # range): every attack would fail, and "no leakage" would be a false negative
    wrong = np.random.default_rng(0).permutation(y)
    with pytest.raises(ValueError, match=r"at chance.*values in \[0, 1\]"):
        audit(model, modality="image", private_data=(X, wrong), attack_params=TINY, verbose=0)
    from kmi.audit.image import pixel_range_of

    assert pixel_range_of(X, X_pub) == (0.0, 1.0)
    assert pixel_range_of(X * 16) == (0.0, 16.0)


def test_image_audit_of_a_model_on_raw_0_to_16_digits_matches_the_unit_range_case(digits):
    """A Rescaling(1/16) model fed raw 0..16 digits: once a silent false negative."""
    from kmi.attacks import InversionModel, MIFace

    model, X, y, X_pub = digits  # takes digits in [0, 1]
    raw = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 16), model])
    evaluator = _eval(X, y)
    raw_evaluator = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 16), evaluator]
    )
    attacks = [
        ("MIFace", MIFace, TINY["MIFace"]),
        ("InversionModel", InversionModel, {"epochs": 10}),
    ]

    def top_1(m, data, public, evaluator, **kwargs):
        report = audit(
            m, modality="image", private_data=(data, y), public_data=public, attacks=attacks,
            eval_model=evaluator, verbose=0, **kwargs,
        )  # fmt: skip
        return report, {r["attack"]: round(r["top_1"], 2) for r in report.rows}

    _, unit = top_1(model, X, X_pub, evaluator)
    report, got = top_1(raw, X * 16, X_pub * 16, raw_evaluator)
    assert report.settings["pixel range of the data"] == "[0, 16]"
    assert got == unit  # the same figures as on [0, 1]
    # before: the attacks searched [0, 1] against a model of 0..16 (MIFace at chance)
    _, before = top_1(raw, X * 16, X_pub * 16, raw_evaluator, pixel_range=(0, 1))
    # measured: MIFace 0.1 and InversionModel 0.4 before, 0.4 and 1.0 now
    assert before["MIFace"] <= 0.3 < unit["MIFace"]
    assert before["InversionModel"] < unit["InversionModel"]


def _mini_xception(n_classes):
    """A small network as third parties build them: separable convolutions, a
    residual add, BatchNormalization, and a softmax Activation as its last layer."""
    layers = keras.layers
    inp = keras.Input((8, 8, 1))
    x = layers.Conv2D(8, 3, padding="same", use_bias=False)(inp)
    x = layers.Activation("relu")(layers.BatchNormalization(momentum=0.9)(x))
    residual = layers.Conv2D(16, 1, strides=2, padding="same")(x)
    x = layers.SeparableConv2D(16, 3, padding="same")(x)
    x = layers.Activation("relu")(layers.BatchNormalization(momentum=0.9)(x))
    x = layers.BatchNormalization(momentum=0.9)(layers.SeparableConv2D(16, 3, padding="same")(x))
    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    x = layers.GlobalAveragePooling2D()(layers.Add()([x, residual]))
    out = layers.Activation("softmax")(layers.Dense(n_classes)(x))
    return keras.Model(inp, out, name="mini_xception")


@pytest.mark.jax_slow  # 31 s on JAX; every kmi line it reaches, faster tests reach
def test_image_audit_runs_every_attack_on_a_reloaded_h5_model_behind_a_wrapper(digits, tmp_path):
    _, X, y, X_pub = digits
    keras.utils.set_random_seed(0)
    net = _mini_xception(10)
    net.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    net.fit(X, y, epochs=8, batch_size=32, verbose=0)
    net.save(tmp_path / "net.h5")  # the legacy format many published models use
    loaded = keras.models.load_model(tmp_path / "net.h5")
    # the user's wrapper: raw 0..16 digits in, the loaded network nested inside
    wrapped = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 16), loaded], name="wrapped"
    )
    report = audit(
        wrapped, modality="image", private_data=(X[:300] * 16, y[:300]),
        public_data=X_pub[:200] * 16, attack_params=TINY | {"DeepInversion": {"max_iter": 20}},
        verbose=0,
    )  # fmt: skip
    names = [r["attack"] for r in report.rows]
    assert names == [
        "PublicMeanBaseline", "MIFace", "DeepInversion", "InversionModel", "GMI", "BREPMI"
    ]  # fmt: skip
    assert "model: skipped attacks" not in report.settings
    assert report.settings["pixel range of the data"] == "[0, 16]"
    assert all(np.isfinite(r["top_1"]) for r in report.rows)


def test_mnist_demo_split_is_one_seeded_permutation():
    from kmi.audit.demo import mnist_demo_split

    X, y, private, test, public = mnist_demo_split()
    assert X.shape == (5000, 32, 32, 1) and len(y) == 5000
    assert [len(i) for i in (private, test, public)] == [3000, 1000, 1000]
    assert len(np.unique(np.concatenate([private, test, public]))) == 5000  # disjoint
    again = mnist_demo_split()
    assert all(np.array_equal(a, b) for a, b in zip(again[2:], (private, test, public)))
    quick = mnist_demo_split(quick=True)
    assert [len(i) for i in quick[2:]] == [300, 100, 200]
    other = mnist_demo_split(random_state=1)
    assert not np.array_equal(other[2], private)
