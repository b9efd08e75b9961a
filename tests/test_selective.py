"""Risk-coverage: abstaining on the most doubtful films, checked on a case counted by hand."""

import numpy as np
import pytest

from cxr_keras.evaluate.selective import doubt_by_confidence, risk_coverage


def test_abstaining_on_the_most_doubtful_films_by_hand():
    y = np.array([1, 1, 1, 0, 0, 0, 1, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.4, 0.1, 0.6, 0.2, 0.7, 0.3, 0.95, 0.05])  # wrong at 0.5: films 2 and 4
    doubt = np.arange(10)[::-1].astype(float)  # film 0 most doubtful, film 9 least
    curve = risk_coverage(y, scores, 0.5, "binary", doubt, coverages=(1.0, 0.8, 0.5))
    assert curve["kept"] == [10, 8, 5]
    assert curve["accuracy"][0] == pytest.approx(0.8)
    # 80%: films 2..9 kept: 2 and 4 wrong of 8
    assert curve["accuracy"][1] == pytest.approx(6 / 8)
    # 50%: films 5..9 kept, all right; positives 6, 8; negatives 5, 7, 9
    assert curve["accuracy"][2] == 1.0 and curve["sensitivity"][2] == 1.0 and curve["specificity"][2] == 1.0
    # 80%: positives kept 2, 6, 8 (2 missed): 2/3; negatives 3, 4, 5, 7, 9 (4 wrong): 4/5
    assert curve["sensitivity"][1] == pytest.approx(2 / 3) and curve["specificity"][1] == pytest.approx(4 / 5)


def test_confidence_doubts_the_films_nearest_the_threshold():
    doubt = doubt_by_confidence(np.array([0.5, 0.3, 0.99, 0.31]), 0.3, "binary")
    assert np.argmax(doubt) == 1 and np.argmin(doubt) == 2
    multiclass = doubt_by_confidence(np.array([[0.5, 0.5], [0.9, 0.1]]), None, "multiclass")
    np.testing.assert_allclose(multiclass, [0.5, 0.1])
