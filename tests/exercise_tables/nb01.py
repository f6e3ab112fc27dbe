"""Wrong answers the hidden tests of notebook 01 must reject (see tests/test_exercises.py)."""
NOTEBOOK = "01_data_and_preprocessing.ipynb"
WRONG_ANSWERS = {
    "q1_ppv": {
        "prevalence left out (a 50% ward)": "ppv_clinic = 0.98 / (0.98 + (1 - 0.85))",
        "specificity where the false-positive rate belongs": (
            "ppv_clinic = 0.98 * 0.05 / (0.98 * 0.05 + 0.85 * (1 - 0.05))"),
        "sensitivity is not the PPV": "ppv_clinic = 0.98",
        "the NPV instead": "ppv_clinic = 0.85 * 0.95 / (0.85 * 0.95 + (1 - 0.98) * 0.05)",
    },
    "q2_leakage": {
        "the notebook's 80/20 split reused": "my_train, my_test = grouped_train, grouped_test",
        "75/25 by image, not by patient": (
            "my_train, my_test = next(ShuffleSplit(test_size=0.25, random_state=seed).split(X))"),
        "train and test swapped": (
            "my_test, my_train = next(GroupShuffleSplit(test_size=0.25, random_state=seed)"
            ".split(X, y, groups))"),
        "grouped by label, not by patient": (
            "my_train, my_test = next(GroupShuffleSplit(test_size=0.25, random_state=seed)"
            ".split(X, y, y))"),
    },
}
