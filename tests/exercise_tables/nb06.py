"""Wrong answers the hidden tests of notebook 06 must reject (see tests/test_exercises.py)."""
NOTEBOOK = "06_explanations.ipynb"
WRONG_ANSWERS = {
    "q1_mask_share": {
        "the lesion's area, not the evidence's share": "share = float(lesion_mask.mean())",
        "inside over outside, not over all": (
            "positive = np.clip(gradcam_map, 0, None)\n"
            "share = float(positive[lesion_mask].sum() / positive[~lesion_mask].sum())"),
        "mean evidence inside the mask": (
            "share = float(np.clip(gradcam_map, 0, None)[lesion_mask].mean())"),
        "lift (share / area), not share": (
            "share = float(gradcam_map[lesion_mask].mean() / gradcam_map.mean())"),
    },
    "q2_pointing": {
        "argmin, not argmax": (
            "peak = np.unravel_index(np.argmin(gradcam_map), gradcam_map.shape)\n"
            "hit = bool(lesion_mask[peak])"),
        "flat index, not unravelled": (
            "peak = np.argmax(gradcam_map)\nhit = bool(lesion_mask.flat[peak])"),
        "the X-ray's brightest pixel, not the map's": (
            "image = syn_test.images[pos[0]]\n"
            "peak = np.unravel_index(np.argmax(image), image.shape)\nhit = bool(lesion_mask[peak])"),
    },
    "q3_tag_sensitivity": {
        "threshold 0.5, not the validation threshold": (
            "untagged_scores = lab.predict(shortcut_model, untagged_test, device='cpu').scores\n"
            "sens_tag_removed = float((untagged_scores[has_tag & (untagged_test.labels == 1)] >= 0.5).mean())"),
        "scored with the tags still on": (
            "sens_tag_removed = float((shortcut_run.test.scores[has_tag & (untagged_test.labels == 1)]"
            " >= t_short).mean())"),
        "the model trained without tags": (
            "untagged_scores = lab.predict(syn_model, untagged_test, device='cpu').scores\n"
            "sens_tag_removed = float((untagged_scores[has_tag & (untagged_test.labels == 1)] >= t_short).mean())"),
        "every pneumonia, not only the tagged ones": (
            "untagged_scores = lab.predict(shortcut_model, untagged_test, device='cpu').scores\n"
            "sens_tag_removed = float((untagged_scores[untagged_test.labels == 1] >= t_short).mean())"),
    },
}
