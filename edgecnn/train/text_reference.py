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
    return {"accuracy": float(np.mean(predicted == np.asarray(y_test))), "n": int(len(y_test)), "method": METHOD}
