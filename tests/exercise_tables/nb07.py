"""Wrong answers the hidden tests of notebook 07 must reject (see tests/test_exercises.py)."""
NOTEBOOK = "07_robustness.ipynb"
WRONG_ANSWERS = {
    "q1_contrast": {
        "the factor of severity 2 (0.65), not severity 3":
            "f = 0.65\n"
            "x_ex = example.astype(np.float64) / 255\n"
            "low_contrast = np.clip(x_ex.mean() + f * (x_ex - x_ex.mean()), 0, 1)\n"
            "low_contrast = np.round(low_contrast * 255).astype(np.uint8)\n",
        "scaled around black (f * x), not around the image mean":
            "f = 0.5\n"
            "x_ex = example.astype(np.float64) / 255\n"
            "low_contrast = np.round(np.clip(f * x_ex, 0, 1) * 255).astype(np.uint8)\n",
        "the inverse factor (1 / f: more contrast, not less)":
            "f = 0.5\n"
            "x_ex = example.astype(np.float64) / 255\n"
            "low_contrast = np.clip(x_ex.mean() + (x_ex - x_ex.mean()) / f, 0, 1)\n"
            "low_contrast = np.round(low_contrast * 255).astype(np.uint8)\n",
    },
    "q2_fgsm_share": {
        "eps given in grey levels (2), not as a fraction of 255":
            "was_detected = lab.predict(model, pneumonias).scores >= threshold\n"
            "adv_images = robustness.fgsm(model, pneumonias.images[was_detected],\n"
            "                             pneumonias.labels[was_detected], eps=2)\n"
            "with torch.no_grad():\n"
            "    adv_scores = torch.sigmoid(model(adv_images)).numpy()\n"
            "share_flipped = float((adv_scores < threshold).mean())\n",
        "attacked on the label normal (pushes towards pneumonia)":
            "was_detected = lab.predict(model, pneumonias).scores >= threshold\n"
            "adv_images = robustness.fgsm(model, pneumonias.images[was_detected],\n"
            "                             np.zeros(int(was_detected.sum()), int), eps=2 / 255)\n"
            "with torch.no_grad():\n"
            "    adv_scores = torch.sigmoid(model(adv_images)).numpy()\n"
            "share_flipped = float((adv_scores < threshold).mean())\n",
        "share of all pneumonias called normal, missed ones included":
            "adv_images = robustness.fgsm(model, pneumonias.images, pneumonias.labels, eps=2 / 255)\n"
            "with torch.no_grad():\n"
            "    adv_scores = torch.sigmoid(model(adv_images)).numpy()\n"
            "share_flipped = float((adv_scores < threshold).mean())\n",
    },
    "q3_worst_shift": {
        "the highest AUC (idxmax), not the lowest":
            "table = sweeps['plain']\n"
            "row = table.loc[table['auc'].idxmax()]\n"
            "worst_kind, worst_severity = str(row['kind']), int(row['severity'])\n",
        "the lowest specificity instead of the lowest AUC":
            "table = sweeps['plain']\n"
            "row = table.loc[table['specificity'].idxmin()]\n"
            "worst_kind, worst_severity = str(row['kind']), int(row['severity'])\n",
        "the normalised model's sweep, not the plain model's":
            "table = sweeps['normalised']\n"
            "row = table.loc[table['auc'].idxmin()]\n"
            "worst_kind, worst_severity = str(row['kind']), int(row['severity'])\n",
    },
}
