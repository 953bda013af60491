"""scikit-learn's estimator checks on the kernel-approximation transformers."""
from sklearn.utils.estimator_checks import parametrize_with_checks

from gpufact.kernel_approximation import (Fastfood, FastNystroem, LearnedStructuredFeatures, OrthogonalRandomFeatures,
                                          StructuredOrthogonalFeatures)

ESTIMATORS = [
    LearnedStructuredFeatures(n_components=16, n_iter=3, batch_size=8, random_state=0),
    Fastfood(n_components=16, random_state=0),
    Fastfood(n_components=16, features="sincos", random_state=0),
    StructuredOrthogonalFeatures(n_components=16, random_state=0),
    OrthogonalRandomFeatures(n_components=16, random_state=0),
    FastNystroem(n_components=8, landmarks="uniform", random_state=0),
    FastNystroem(n_components=8, landmarks="kmeans", random_state=0),
    FastNystroem(n_components=8, landmarks="fast-nys", random_state=0),
]


def _expected_failures(est):
    # gpufact's shared check_samples answers complex data with a TypeError (the project's rule
    # for a wrong dtype); scikit-learn's check expects a ValueError
    return {"check_complex_data": "complex data raises TypeError (gpufact convention), not ValueError"}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failures)
def test_sklearn_compatible(estimator, check):
    check(estimator)
