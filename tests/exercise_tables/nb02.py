"""Wrong answers the hidden tests of notebook 02 must reject (see tests/test_exercises.py)."""
NOTEBOOK = "02_cnn_vs_attention.ipynb"
WRONG_ANSWERS = {
    "q1_parameter_ratio": {
        "the default (small-image) stem, not the model that ran": (
            'param_ratio = (lab.count_parameters(lab.create("resnet18", image_size=lesson.train.image_size))\n'
            '               / lab.count_parameters(lab.create("smallcnn", image_size=lesson.train.image_size)))'),
        "inverted ratio": (
            'param_ratio = runs["smallcnn"].metrics["n_parameters"] / runs["resnet18"].metrics["n_parameters"]'),
        "attention CNN instead of the compact CNN": (
            'param_ratio = runs["resnet18"].metrics["n_parameters"] / runs["attention_cnn"].metrics["n_parameters"]'),
    },
    "q2_attention_share": {
        "mean attention inside, not share": (
            "def attention_share(a, mask):\n"
            "    return float(np.asarray(a, dtype=float)[np.asarray(mask, dtype=bool)].mean())"),
        "the mask's area (chance), not the attention": (
            "def attention_share(a, mask):\n"
            "    return float(np.asarray(mask, dtype=bool).mean())"),
        "inside over outside, not over the total": (
            "def attention_share(a, mask):\n"
            "    a, mask = np.asarray(a, dtype=float), np.asarray(mask, dtype=bool)\n"
            "    return float(a[mask].sum() / a[~mask].sum())"),
    },
    "q3_fewest_misses": {
        "misses at threshold 0.5, not at the matched threshold": (
            'missed = {a: lab.binary_metrics(runs[a].test, 0.5)["fn"] for a in runs if table.loc[a, "informative"]}\n'
            "safest_model = min(missed, key=missed.get)"),
        "misses on validation, not test": (
            'missed = {a: lab.binary_metrics(runs[a].val, thresholds[a])["fn"] for a in runs if table.loc[a, "informative"]}\n'
            "safest_model = min(missed, key=missed.get)"),
        "false alarms instead of misses": (
            'missed = {a: lab.binary_metrics(runs[a].test, thresholds[a])["fp"] for a in runs if table.loc[a, "informative"]}\n'
            "safest_model = min(missed, key=missed.get)"),
    },
}
