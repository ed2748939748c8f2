"""The non-neural reference line for text models: TF-IDF + logistic regression on the same split.

``edgecnn train`` puts it in metrics.json and ``edgecnn eval`` prints it under the table, so a user sees what the
CNN buys (or costs) against the classic baseline. The settings are fixed in advance (scikit-learn defaults plus
sublinear tf) and never tuned on the test split: the line is a yardstick, not a competitor we optimize.
"""

from __future__ import annotations

import numpy as np

from ..errors import require

METHOD = "TF-IDF (unigrams, sublinear tf) + logistic regression (C=1), fit on the training split"


def tfidf_reference(x_train, y_train, x_test, y_test) -> dict:
    """Accuracy of TF-IDF + logistic regression trained on ``x_train`` and scored on ``x_test``."""
    text = require("sklearn.feature_extraction.text", "train", "The TF-IDF reference line")
    linear = require("sklearn.linear_model", "train", "The TF-IDF reference line")
    vectorizer = text.TfidfVectorizer(sublinear_tf=True)
    features = vectorizer.fit_transform(x_train)
    classifier = linear.LogisticRegression(C=1.0, max_iter=2000).fit(features, np.asarray(y_train))
    predicted = classifier.predict(vectorizer.transform(x_test))
    return {"accuracy": float(np.mean(predicted == np.asarray(y_test))), "n": len(y_test), "method": METHOD}


def reference_report(manifest: dict) -> dict:
    """``edgecnn eval``'s extra for text models: the TF-IDF line on the manifest's split, and a note to print.

    Without scikit-learn (a runtime-only install) the line is skipped with a note saying how to get it.
    """
    from ..errors import MissingDependencyError
    from .datasets import load_dataset

    dataset = manifest.get("dataset") or {}
    try:
        splits = load_dataset(dataset["name"], seed=dataset.get("seed", 0), **dataset.get("options", {}))
        x_test, y_test = splits.split(dataset.get("split", "test"))
        line = tfidf_reference(splits.x_train, splits.y_train, x_test, y_test)
    except MissingDependencyError as exc:
        return {"notes": [f"TF-IDF reference line skipped: {exc}"]}
    note = f"reference: {line['method']}: accuracy {line['accuracy']:.4f} on the same split (n={line['n']})"
    return {"tfidf_reference": line, "notes": [note]}
