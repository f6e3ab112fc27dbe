"""Wrong answers the hidden tests of notebook 03 must reject (see tests/test_exercises.py)."""
NOTEBOOK = "03_weighted_loss.ipynb"
WRONG_ANSWERS = {
    "q1_pos_weight": {
        "inverted ratio (pneumonia / normal)":
            "auto_pos_weight = float((rare_pneumonia.labels == 1).sum()"
            " / (rare_pneumonia.labels == 0).sum())",
        "the course's balanced training set instead of rare_pneumonia":
            "auto_pos_weight = float((train.labels == 0).sum() / (train.labels == 1).sum())",
        "the pneumonia class weight N / (K n_1) alone, not the ratio":
            "auto_pos_weight = float(lab.class_weights_from_labels(rare_pneumonia.labels)[1])",
    },
    "q2_weighted_bce": {
        "weight on the normal term":
            "def my_weighted_bce(logits, targets, w):\n"
            "    t = targets.float()\n"
            "    return -(t * F.logsigmoid(logits) + w * (1 - t) * F.logsigmoid(-logits)).mean()\n",
        "sum instead of the batch mean":
            "def my_weighted_bce(logits, targets, w):\n"
            "    t = targets.float()\n"
            "    return -(w * t * F.logsigmoid(logits) + (1 - t) * F.logsigmoid(-logits)).sum()\n",
        "weighted mean (divided by the sum of the weights, the class-weight form)":
            "def my_weighted_bce(logits, targets, w):\n"
            "    t = targets.float()\n"
            "    per = -(w * t * F.logsigmoid(logits) + (1 - t) * F.logsigmoid(-logits))\n"
            "    return per.sum() / (w * t + (1 - t)).sum()\n",
    },
    "q3_wrong_direction": {
        "inverted cost ratio (n_pneumonia / n_normal)":
            "miss_cost_ratio = 0.90 / 0.10\nprotects_patients = miss_cost_ratio > 1",
        "right ratio, read the wrong way":
            "miss_cost_ratio = 0.10 / 0.90\nprotects_patients = True",
        "the share of normals, not a ratio of weights":
            "miss_cost_ratio = 0.10\nprotects_patients = False",
    },
}
