"""Wrong answers the hidden tests of notebook 04 must reject (see tests/test_exercises.py)."""
NOTEBOOK = "04_thresholds.ipynb"
WRONG_ANSWERS = {
    "q1_counts": {
        "every image called normal, not only the pneumonias": (
            "fn_at_03 = int(np.sum(test.scores < 0.3))"),
        "true positives instead": "fn_at_03 = int(np.sum((test.scores >= 0.3) & (test.y_true == 1)))",
        "on validation, not test": "fn_at_03 = int(np.sum((val.scores < 0.3) & (val.y_true == 1)))",
    },
    "q2_recall_rule": {
        "threshold 0 (flag everyone)": "my_threshold = 0.0",
        "smallest, not largest": (
            "candidates = np.unique(val.scores)\n"
            "positives = val.scores[val.y_true == 1]\n"
            "recalls = np.array([(positives >= t).mean() for t in candidates])\n"
            "my_threshold = float(candidates[recalls >= 0.90].min())"),
        "share of all images flagged, not recall": (
            "candidates = np.unique(val.scores)\n"
            "flagged = np.array([(val.scores >= t).mean() for t in candidates])\n"
            "my_threshold = float(candidates[flagged >= 0.90].max())"),
        "chosen on test, not validation": (
            "candidates = np.unique(test.scores)\n"
            "positives = test.scores[test.y_true == 1]\n"
            "recalls = np.array([(positives >= t).mean() for t in candidates])\n"
            "my_threshold = float(candidates[recalls >= 0.90].max())"),
    },
}
