"""Wrong answers the hidden tests of notebook 05 must reject (see tests/test_exercises.py)."""
NOTEBOOK = "05_ensembles.ipynb"
WRONG_ANSWERS = {
    "q1_any_model": {
        "mean of the seeds, not the max":
            "any_seed_scores = np.column_stack([test[name].scores for name in seed_names]).mean(axis=1)",
        "max over the architectures, not the seeds":
            "any_seed_scores = np.column_stack([test[name].scores for name in members]).max(axis=1)",
        "max over the images (wrong axis)":
            "any_seed_scores = np.column_stack([test[name].scores for name in seed_names]).max(axis=0)",
    },
    "q2_missed_by_all": {
        "missed by any member, not every one":
            "each_misses = np.column_stack([test[m].scores < thresholds[m] for m in members])\n"
            "n_missed_by_all = int(((test[members[0]].y_true == 1) & each_misses.any(axis=1)).sum())",
        "normal images counted too (below every threshold)":
            "each_misses = np.column_stack([test[m].scores < thresholds[m] for m in members])\n"
            "n_missed_by_all = int(each_misses.all(axis=1).sum())",
        "threshold 0.5 instead of each member's matched threshold":
            "each_misses = np.column_stack([test[m].scores < 0.5 for m in members])\n"
            "n_missed_by_all = int(((test[members[0]].y_true == 1) & each_misses.all(axis=1)).sum())",
    },
    "q3_two_members": {
        "at least three votes":
            "votes_for = np.column_stack([test[m].scores >= thresholds[m] for m in members])\n"
            "two_members = (votes_for.sum(axis=1) >= 3).astype(int)\n"
            "fn_two_members = int(((two_members == 0) & (test[members[0]].y_true == 1)).sum())",
        "any single member":
            "votes_for = np.column_stack([test[m].scores >= thresholds[m] for m in members])\n"
            "two_members = (votes_for.sum(axis=1) >= 1).astype(int)\n"
            "fn_two_members = int(((two_members == 0) & (test[members[0]].y_true == 1)).sum())",
        "misses counted over every image, normals included":
            "votes_for = np.column_stack([test[m].scores >= thresholds[m] for m in members])\n"
            "two_members = (votes_for.sum(axis=1) >= 2).astype(int)\n"
            "fn_two_members = int((two_members == 0).sum())",
    },
}
