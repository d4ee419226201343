"""The ``iris`` tabular model: scikit-learn's bundled iris data, a scaler + logistic regression, converted by skl2onnx.

The graph takes ``features`` (float32, [batch, 4]) and returns ``probabilities`` (float32, [batch, 3]) in
label order, plus skl2onnx's ``label`` output (int64 class index). Its card reports the accuracy of the
written ``model.onnx`` itself, run through ONNX Runtime on the held-out rows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np
import onnx
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from engine.session import SessionConfig, open_session
from modelbuild.evaluation import classification_report

MODEL_NAME = "iris"
VERSION = "v1"
FOLDER = "iris_v1"
KIND = "tabular"
LABELS = ("setosa", "versicolor", "virginica")
FEATURE_NAMES = ("sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)")
INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"
TEST_FRACTION = 0.3
SPLIT_SEED = 42
# Opset 17 / ai.onnx.ml 3 run on every onnxruntime the project allows (>= 1.18).
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
LIBRARIES = ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy")


@dataclass(frozen=True)
class IrisSplit:
    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


def iris_split() -> IrisSplit:
    """The deterministic, stratified 70/30 split of the 150 iris rows (features as float32, as served)."""
    data = load_iris()
    names = tuple(str(n) for n in data.target_names)
    if names != LABELS or tuple(data.feature_names) != FEATURE_NAMES:
        raise ValueError(f"scikit-learn's iris data changed: labels {names}, features {data.feature_names}")
    features = np.asarray(data.data, dtype=np.float32)
    target = np.asarray(data.target, dtype=np.int64)
    x_train, x_test, y_train, y_test = train_test_split(features, target, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=target)
    return IrisSplit(x_train=x_train, x_test=x_test, y_train=y_train, y_test=y_test)


def train_pipeline(split: IrisSplit) -> Pipeline:
    """StandardScaler + multinomial logistic regression (lbfgs: deterministic)."""
    pipeline = Pipeline([("scaler", StandardScaler()), ("classifier", LogisticRegression(C=1.0, max_iter=1000))])
    pipeline.fit(split.x_train, split.y_train)
    return pipeline


def to_onnx(pipeline: Pipeline) -> onnx.ModelProto:
    """Convert with zipmap off (``probabilities`` is a plain tensor) and a named, symbolic batch axis."""
    try:
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType
    except ImportError as exc:
        raise ImportError("skl2onnx is needed to build the iris model: pip install -e '.[build]' (or `make models`)") from exc

    classifier = pipeline.named_steps["classifier"]
    model: onnx.ModelProto = convert_sklearn(
        pipeline,
        name=MODEL_NAME,
        initial_types=[(INPUT_NAME, FloatTensorType([None, len(FEATURE_NAMES)]))],
        options={id(classifier): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    # skl2onnx leaves the batch dimension unnamed; name it so every graph in models/ reads [batch, ...].
    for value in list(model.graph.input) + list(model.graph.output):
        batch = value.type.tensor_type.shape.dim[0]
        if not batch.HasField("dim_value"):
            batch.dim_param = "batch"
    # One opset entry per domain.
    opsets = {entry.domain: entry.version for entry in model.opset_import}
    del model.opset_import[:]
    for domain, version in sorted(opsets.items()):
        model.opset_import.append(onnx.helper.make_opsetid(domain, version))
    onnx.checker.check_model(model, full_check=True)
    return model


def evaluate(model_path: Path, split: IrisSplit) -> dict[str, object]:
    """Accuracy, per-class recall and confusion of the ONNX file on the held-out rows, via ONNX Runtime."""
    session = open_session(model_path, SessionConfig(providers=("CPUExecutionProvider",)))
    probabilities = session.run([OUTPUT_NAME], {INPUT_NAME: split.x_test})[0]
    predicted = [LABELS[i] for i in np.asarray(probabilities).argmax(axis=1)]
    return classification_report([LABELS[i] for i in split.y_test], predicted, LABELS)


def write_card(folder: Path, card: dict[str, object]) -> None:
    (folder / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    ev = card["evaluation"]
    assert isinstance(ev, dict)
    features = card["features"]
    assert isinstance(features, list)
    lines = [
        f"# {MODEL_NAME} {card['version']} (tabular, fp32)",
        "",
        f"{card['description']}.",
        "",
        f"- **Labels:** {', '.join(LABELS)}",
        f"- **Features, in order:** {', '.join(features)}",
        f"- **Data source:** {card['data_source']}",
        f"- **Split:** {card['split']}",
        f"- **Held-out accuracy of this file:** {ev['accuracy']:.4f} on {ev['examples']} rows",
        f"- **Per-class recall:** {json.dumps(ev['per_class_recall'])}",
        f"- **Pipeline:** {card['pipeline']}",
        f"- **model.onnx sha256:** `{card['sha256']}`",
        f"- **Build command:** `{card['build_command']}`",
        f"- **Libraries:** {card['libraries']}",
        "",
        f"Input: `{INPUT_NAME}` (float32, shape [batch, {len(features)}]), columns in the feature order above. "
        f"Outputs: `{OUTPUT_NAME}` (float32, [batch, {len(LABELS)}]) in label order, and `label` (int64, [batch]).",
        "",
    ]
    (folder / "MODEL_CARD.md").write_text("\n".join(lines))


def build_iris(folder: Path, build_command: str) -> dict[str, object]:
    """Train, convert, evaluate and describe the iris model in ``folder`` (created); return its card."""
    folder.mkdir(parents=True)
    split = iris_split()
    pipeline = train_pipeline(split)
    onnx.save(to_onnx(pipeline), str(folder / "model.onnx"))
    (folder / "labels.json").write_text(json.dumps(list(LABELS)) + "\n")
    evaluation = evaluate(folder / "model.onnx", split)
    classifier = pipeline.named_steps["classifier"]
    card: dict[str, object] = {
        "model": MODEL_NAME,
        "version": VERSION,
        "kind": KIND,
        "description": "StandardScaler + multinomial logistic regression on the four iris measurements, fp32",
        "labels": list(LABELS),
        "features": list(FEATURE_NAMES),
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": ["batch", len(FEATURE_NAMES)]},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", len(LABELS)]},
        "data_source": f"Fisher's iris data (1936; UCI Machine Learning Repository): 150 flowers, 50 per species, "
        f"as bundled with scikit-learn {package_version('scikit-learn')} (sklearn.datasets.load_iris)",
        "split": f"stratified by species, sklearn.model_selection.train_test_split(test_size={TEST_FRACTION}, "
        f"random_state={SPLIT_SEED}): {len(split.y_train)} train rows, {len(split.y_test)} test rows",
        "pipeline": f"StandardScaler -> LogisticRegression(C={classifier.C}, lbfgs, max_iter={classifier.max_iter}), "
        f"converted by skl2onnx (zipmap off, target opset {TARGET_OPSET['']}, ai.onnx.ml {TARGET_OPSET['ai.onnx.ml']})",
        "evaluation": evaluation,
        "sha256": hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest(),
        "build_command": build_command,
        "libraries": ", ".join(f"{n} {package_version(n)}" for n in LIBRARIES),
    }
    write_card(folder, card)
    return card
