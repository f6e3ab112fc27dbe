"""Wrong answers the hidden tests of notebook 08 must reject (see tests/test_exercises.py)."""
NOTEBOOK = "08_clinical_validation.ipynb"
WRONG_ANSWERS = {
    "q1_missed_upper": {
        "the point estimate, not the interval's worst end": (
            'missed_upper = 1000 * deployment_prevalence * (1 - reports["test"]["sensitivity"])'),
        "the interval's best end": (
            'missed_upper = 1000 * deployment_prevalence * (1 - reports["test"]["sensitivity_ci"][1])'),
        "the test set's prevalence, not the clinic's": (
            'missed_upper = 1000 * reports["test"]["prevalence"] * (1 - reports["test"]["sensitivity_ci"][0])'),
        "prevalence left out": 'missed_upper = 1000 * (1 - reports["test"]["sensitivity_ci"][0])',
    },
    "q2_net_benefit": {
        "the test set's own prevalence": (
            "called_03 = test_clinic.scores >= t_q2\n"
            "pi_test = test_clinic.y_true.mean()\n"
            "nb_03 = (called_03[test_clinic.y_true == 1].mean() * pi_test\n"
            "         - called_03[test_clinic.y_true == 0].mean() * (1 - pi_test) * t_q2 / (1 - t_q2))"),
        "p_t, not the odds p_t / (1 - p_t)": (
            "called_03 = test_clinic.scores >= t_q2\n"
            "nb_03 = (called_03[test_clinic.y_true == 1].mean() * deployment_prevalence\n"
            "         - called_03[test_clinic.y_true == 0].mean() * (1 - deployment_prevalence) * t_q2)"),
        "validation probabilities, not moved to the clinic": (
            "called_03 = test_cal.scores >= t_q2\n"
            "nb_03 = (called_03[test_cal.y_true == 1].mean() * deployment_prevalence\n"
            "         - called_03[test_cal.y_true == 0].mean() * (1 - deployment_prevalence) * t_q2 / (1 - t_q2))"),
    },
    "q3_conformal": {
        "off by one (1-based position)": (
            "pos_scores = np.sort(run.val.scores[run.val.y_true == 1])\n"
            "t_by_hand = float(pos_scores[int(np.floor(alpha * (len(pos_scores) + 1) + 1e-9))])"),
        "every validation score, not only the pneumonias'": (
            "pos_scores = np.sort(run.val.scores)\n"
            "t_by_hand = float(pos_scores[int(np.floor(alpha * (len(pos_scores) + 1) + 1e-9)) - 1])"),
        "sorted in decreasing order": (
            "pos_scores = np.sort(run.val.scores[run.val.y_true == 1])[::-1]\n"
            "t_by_hand = float(pos_scores[int(np.floor(alpha * (len(pos_scores) + 1) + 1e-9)) - 1])"),
    },
}
