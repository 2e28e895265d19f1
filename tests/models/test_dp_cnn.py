import keras
import numpy as np

from kmi.defenses import check_dp_compatible
from kmi.models.dp_cnn import dp_cnn


def test_dp_cnn_architecture_and_dp_compatibility():
    model = dp_cnn()
    assert model.output_shape == (None, 10)
    assert model.count_params() == 26010
    assert [type(layer).__name__ for layer in model.layers] == [
        "Conv2D",
        "MaxPooling2D",
        "Conv2D",
        "MaxPooling2D",
        "Flatten",
        "Dense",
        "Dense",
    ]
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    check_dp_compatible(model)
    out = model.predict(np.zeros((2, 28, 28, 1), "float32"), verbose=0)
    assert out.shape == (2, 10)


def test_dp_cnn_options():
    model = dp_cnn(input_shape=(32, 32, 3), num_classes=4, activation="relu", name="cnn")
    assert model.output_shape == (None, 4) and model.name == "cnn"
