"""scikit-learn's estimator checks on small, fast QuickMeans configurations."""
from sklearn.utils.estimator_checks import parametrize_with_checks

from gpufact.cluster import QuickMeans

_ESTIMATORS = [
    QuickMeans(n_clusters=3, sparsity=1, max_iter=5, palm_max_iter=10, batch_size=7, random_state=0),
    QuickMeans(n_clusters=3, structure="butterfly", init="random", max_iter=5, random_state=0),
]


def _expected_failures(est):
    return {
        # gpufact's rule (check_samples): a wrong dtype is a TypeError naming X; scikit-learn's
        # check wants a ValueError for complex input. The message says it plainly either way.
        "check_complex_data": "complex X raises TypeError (gpufact's dtype convention), not ValueError",
    }


@parametrize_with_checks(_ESTIMATORS, expected_failed_checks=_expected_failures)
def test_sklearn_compatible(estimator, check):
    check(estimator)
