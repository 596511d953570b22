"""`digits-keras`: a TensorFlow/Keras dense network on the 8x8 digits, exported with tf2onnx (NHWC input)."""

from __future__ import annotations

import os

import numpy as np

from training.base import Report, TrainResult
from training.digits_common import SEED, digits_result, split

EPOCHS = 40
OPSET = 17


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # oneDNN reorders float sums: runs would differ in the last bits


class _Recipe:
    name = "digits-keras"

    def train(self, report: Report) -> TrainResult:
        _quiet_tensorflow()
        import keras
        import tensorflow as tf
        import tf2onnx

        keras.utils.set_random_seed(SEED)
        tf.config.experimental.enable_op_determinism()
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.threading.set_intra_op_parallelism_threads(2)
        x_tr, x_te, y_tr, y_te = split()
        x_tr, x_te = x_tr[..., None], x_te[..., None].astype(np.float32)
        model = keras.Sequential([
            keras.Input(shape=(8, 8, 1)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(10, activation="softmax"),
        ])
        model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])

        class _Progress(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                if (epoch + 1) % 5 == 0 or epoch == 0:
                    logs = logs or {}
                    report(f"digits-keras: epoch {epoch + 1}/{EPOCHS} loss {logs.get('loss', float('nan')):.4f} "
                           f"accuracy {logs.get('accuracy', float('nan')):.4f}")

        model.fit(x_tr, y_tr, epochs=EPOCHS, batch_size=64, verbose=0, shuffle=True, callbacks=[_Progress()])
        proba = model.predict(x_te, verbose=0, batch_size=256)

        # tf2onnx.convert.from_keras fails on Keras 3 (KeyError 'keras_tensor_…'); a tf.function with a
        # (None, 8, 8, 1) signature converts cleanly and keeps the batch axis dynamic.
        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32, name="input")])
        def serve(x: tf.Tensor) -> dict[str, tf.Tensor]:
            p = model(x, training=False)
            return {"label": tf.argmax(p, axis=1, output_type=tf.int64), "probabilities": p}

        onnx_model, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=OPSET)
        result = digits_result(self.name, onnx_model.SerializeToString(), x_te, y_te, proba,
                               layout="NHWC [batch, 8, 8, 1]", framework=f"tensorflow {tf.__version__} / keras {keras.__version__}",
                               algorithm="Keras CNN (conv 16 + dense 64)", n_train=len(x_tr), opset=OPSET)
        report(f"digits-keras: held-out accuracy {result.card.metrics['accuracy']:.4f}")
        return result


RECIPE = _Recipe()
