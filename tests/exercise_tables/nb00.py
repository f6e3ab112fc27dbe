"""Wrong answers the hidden tests of notebook 00 must reject (see tests/test_exercises.py)."""
NOTEBOOK = "00_welcome.ipynb"
WRONG_ANSWERS = {
    "q1_sensitivity": {
        "miss rate, not sensitivity": "tp, fn = 184, 200 - 184\nsensitivity = fn / (tp + fn)",
        "a percentage, not a share": "tp, fn = 184, 200 - 184\nsensitivity = 100 * tp / (tp + fn)",
        "integer division": "tp, fn = 184, 200 - 184\nsensitivity = float(tp // (tp + fn))",
    },
    "q2_missed_per_1000": {
        "prevalence left out": "clinic_prevalence = 0.10\nmissed_per_1000 = 1000 * (1 - 0.92)",
        "caught, not missed": "clinic_prevalence = 0.10\nmissed_per_1000 = 1000 * clinic_prevalence * 0.92",
        "per person, not per 1,000": (
            "clinic_prevalence = 0.10\nmissed_per_1000 = clinic_prevalence * (1 - 0.92)"),
    },
}
